// Scalar heads (value, reward) on the final hidden state, and reading a sequence's last valid position.
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/model/heads.h"
#include "test_util.h"

namespace reglage {
namespace {

TEST(Heads, ScalarHeadIsALinearMapPerPosition) {
  model::ScalarHead head(3, 7);
  {
    torch::NoGradGuard no_grad;
    head->weight.copy_(torch::tensor({{1.0f, -2.0f, 0.5f}}));
    head->bias.fill_(0.25);
  }
  auto hidden = torch::tensor({{{1.0f, 1.0f, 2.0f}, {0.0f, 1.0f, 0.0f}}});  // (1, 2, 3)
  auto v = head(hidden);                                                    // (1, 2)
  ASSERT_EQ(v.sizes(), (std::vector<int64_t>{1, 2}));
  // hand-computed: 1 - 2 + 1 + 0.25 = 0.25; -2 + 0.25 = -1.75
  EXPECT_FLOAT_EQ(v[0][0].item<float>(), 0.25f);
  EXPECT_FLOAT_EQ(v[0][1].item<float>(), -1.75f);
}

TEST(Heads, InitialisationIsSeeded) {
  model::ScalarHead a(64, 1), b(64, 1), c(64, 2);
  EXPECT_TRUE(torch::equal(a->weight, b->weight));
  EXPECT_FALSE(torch::equal(a->weight, c->weight));
  EXPECT_EQ(a->bias.item<float>(), 0.0f);
}

TEST(Heads, LastValidPositionWithLeftAndRightPadding) {
  auto values = torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}, {5.0f, 6.0f, 7.0f, 8.0f}, {9.0f, 10.0f, 11.0f, 12.0f}});
  auto valid = torch::tensor({{1, 1, 0, 0}, {0, 0, 1, 1}, {0, 1, 1, 0}}).to(torch::kBool);
  auto last = model::gather_last_valid(values, valid);
  EXPECT_TRUE(torch::equal(last, torch::tensor({2.0f, 8.0f, 11.0f})));
}

TEST(Heads, ValueHeadOnTheSharedBaseTrains) {
  auto m = io::load_model(test::model_260k());
  model::ScalarHead head(m->config().dim, 3);
  auto ids = torch::tensor({1, 403, 407, 261}, torch::kLong).unsqueeze(0);
  auto h = m->hidden({ids, {}, {}, nullptr, {}});  // (1, 4, 64)
  auto values = head(h);                            // (1, 4)
  ASSERT_EQ(values.sizes(), (std::vector<int64_t>{1, 4}));
  values.sum().backward();
  EXPECT_TRUE(head->weight.grad().defined());
  EXPECT_GT(head->weight.grad().abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace reglage
