// Real chat templates against transformers: every template of tests/data/chat/templates/ on every
// conversation of conversations.json, add_generation_prompt off and on, must render byte-identically to
// expected.json (made by tests/data/chat/make_expected.py with transformers' jinja environment). Where
// transformers raised, the renderer must raise too (with the template's own message for raise_exception).
#include <map>
#include <set>

#include "tests/unit/test_jinja_util.h"

namespace reglage::test {
namespace {

struct Fixture {
  nlohmann::ordered_json expected = nlohmann::ordered_json::parse(jinja_fixture("expected.json"));
  std::map<std::string, nlohmann::ordered_json> conversations;
  Fixture() {
    for (const auto& c : nlohmann::ordered_json::parse(jinja_fixture("conversations.json")))
      conversations[c["name"].get<std::string>()] = c;
  }
};

chat::ChatRenderOptions options_for(const Fixture& f, const nlohmann::ordered_json& c, bool add_generation_prompt) {
  chat::ChatRenderOptions o;
  o.add_generation_prompt = add_generation_prompt;
  o.bos_token = f.expected["bos_token"].get<std::string>();
  o.eos_token = f.expected["eos_token"].get<std::string>();
  o.date = chat::ChatDate{2026, 12, 4, 9, 30, 0};  // expected.json's "date"
  if (c.contains("tools")) o.tools = c["tools"];
  return o;
}

TEST(ChatTemplates, ByteIdenticalToTransformers) {
  Fixture f;
  ASSERT_EQ(f.expected["date"], "2026-12-04T09:30:00");
  std::map<std::string, std::set<std::string>> rendered_conversations;  // template -> conversations ok
  int outputs = 0, identical = 0, errors = 0, errors_matched = 0;
  for (const auto& c : f.expected["cases"]) {
    const std::string name = c["template"], conv = c["conversation"];
    const bool agp = c["add_generation_prompt"];
    SCOPED_TRACE(name + " / " + conv + (agp ? " / add_generation_prompt" : ""));
    chat::ChatTemplate tmpl(jinja_fixture("templates/" + name), name);
    const auto& conversation = f.conversations.at(conv);
    auto options = options_for(f, conversation, agp);
    if (c.contains("output")) {
      ++outputs;
      std::string got = tmpl.render(conversation["messages"], options);
      EXPECT_EQ(got, c["output"].get<std::string>());
      if (got == c["output"].get<std::string>()) {
        ++identical;
        rendered_conversations[name].insert(conv + (agp ? "+agp" : ""));
      }
      continue;
    }
    ++errors;
    const std::string want = c["error"];
    try {
      std::string got = tmpl.render(conversation["messages"], options);
      ADD_FAILURE() << "transformers raised \"" << want << "\", the renderer gave: " << got;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(name + ":"), std::string::npos) << msg;  // located in the template
      if (want.rfind("TemplateError: ", 0) == 0) {  // raise_exception: the template's own words
        EXPECT_NE(msg.find("raise_exception: " + want.substr(15)), std::string::npos) << msg;
      }
      ++errors_matched;
    }
  }
  std::printf("[ChatTemplates] %d/%d renderings byte-identical to transformers, %d/%d errors raised alike\n",
              identical, outputs, errors_matched, errors);
  EXPECT_EQ(identical, outputs);
  EXPECT_EQ(errors_matched, errors);
  // Acceptance: nine templates (eight of shared/chat-templates plus SmolLM2's), each rendered on at least
  // four conversations with add_generation_prompt off and on.
  EXPECT_EQ(rendered_conversations.size(), 9u);
  for (const auto& [name, convs] : rendered_conversations) EXPECT_GE(convs.size(), 8u) << name;
}

// Hermes 3's json_to_python_type recurses forever on a union type holding "null" (a str is iterable, so it
// recurses into its characters); transformers dies with RecursionError, the renderer stops at its depth limit.
TEST(ChatTemplates, HermesUnionWithNullIsStoppedByTheDepthLimit) {
  Fixture f;
  auto conversation = f.conversations.at("tools_offered");
  conversation["tools"][0]["function"]["parameters"]["properties"]["days"]["type"] = {"integer", "null"};
  const std::string name = "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja";
  chat::ChatTemplate tmpl(jinja_fixture("templates/" + name), name);
  try {
    tmpl.render(conversation["messages"], options_for(f, conversation, true));
    FAIL() << "expected the recursion to be stopped";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("macro calls nest deeper than 100"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace reglage::test
