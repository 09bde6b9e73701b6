// Renderer errors: a malformed template, an unsupported construct, a runtime error and a runaway template
// each stop with one line naming the template's line:column and what was expected.
#include "tests/unit/test_jinja_util.h"

namespace reglage::test {
namespace {

TEST(JinjaErrors, UnclosedBlockNamesTheOpeningTag) {
  EXPECT_EQ(jinja_error("{% for x in y %}\nabc"),
            "t.jinja:1:4: unclosed 'for' block: the template ends before {% endfor %}");
  EXPECT_EQ(jinja_error("x\n{% if a %}1{% elif b %}2{% else %}3"),
            "t.jinja:2:4: unclosed 'if' block: the template ends before {% endif %}");
  EXPECT_EQ(jinja_error("{% macro m() %}body"),
            "t.jinja:1:4: unclosed 'macro' block: the template ends before {% endmacro %}");
}

TEST(JinjaErrors, MismatchedOrStrayEndTag) {
  EXPECT_EQ(jinja_error("{% for x in y %}{% endif %}"),
            "t.jinja:1:20: unexpected 'endif': the innermost open block is 'for' (line 1), closed by {% endfor %}");
  EXPECT_EQ(jinja_error("a\n{% endfor %}"), "t.jinja:2:4: unexpected 'endfor': no block is open here");
}

TEST(JinjaErrors, UnknownFilterOrTestIsRefusedBeforeRendering) {
  // jinja2 refuses these when it compiles the template, even in a branch that never runs.
  EXPECT_EQ(jinja_error("{% if false %}{{ x | frobnicate }}{% endif %}"), "t.jinja:1:22: unknown filter 'frobnicate'");
  EXPECT_EQ(jinja_error("{{ x is frobnicated }}"), "t.jinja:1:9: unknown test 'frobnicated'");
}

TEST(JinjaErrors, UnsupportedAndUnknownTags) {
  EXPECT_EQ(jinja_error("hello\n  {% include 'x' %}"), "t.jinja:2:6: the 'include' tag is not supported by this renderer");
  EXPECT_EQ(jinja_error("{% extends 'base' %}"), "t.jinja:1:4: the 'extends' tag is not supported by this renderer");
  EXPECT_EQ(jinja_error("{% foo %}"), "t.jinja:1:4: unknown tag 'foo'");
  EXPECT_EQ(jinja_error("{% for x in [] recursive %}{% endfor %}"),
            "t.jinja:1:16: recursive for loops are not supported by this renderer");
}

TEST(JinjaErrors, MalformedTagsCommentsAndStrings) {
  EXPECT_EQ(jinja_error("a {# unclosed"), "t.jinja:1:3: missing end of comment tag '#}'");
  EXPECT_EQ(jinja_error("{{ 1 + "), "t.jinja:1:1: unexpected end of template, expected '}}' to close this tag");
  EXPECT_EQ(jinja_error("{{ 'abc }}"), "t.jinja:1:4: unterminated string literal");
  EXPECT_EQ(jinja_error("line1\n  {{ 1 +  }}"), "t.jinja:2:11: expected an expression, found '}}'");
  EXPECT_EQ(jinja_error("{{ a $ b }}"), "t.jinja:1:6: unexpected character '$' in a tag");
}

TEST(JinjaErrors, RaiseExceptionKeepsTheTemplatesMessage) {
  EXPECT_EQ(jinja_error("{% if messages[0].role == 'system' %}\n  {{- raise_exception('System role not supported') }}\n{% endif %}",
                        R"({"messages": [{"role": "system", "content": "x"}]})"),
            "t.jinja:2:7: raise_exception: System role not supported");
}

TEST(JinjaErrors, RuntimeErrorsWhereJinjaErrors) {
  EXPECT_EQ(jinja_error("{{ x.y }}"), "t.jinja:1:5: 'x' is undefined");  // attribute of an undefined value
  EXPECT_EQ(jinja_error("{{ f() }}"), "t.jinja:1:4: 'f' is undefined");
  EXPECT_EQ(jinja_error("{{ 'a' + 1 }}"), "t.jinja:1:8: can only concatenate str (not \"int\") to str");
  EXPECT_EQ(jinja_error("{% for x in 5 %}{% endfor %}"), "t.jinja:1:13: 'int' object is not iterable");
  EXPECT_EQ(jinja_error("{{ 1 / 0 }}"), "t.jinja:1:6: division by zero");
  EXPECT_EQ(jinja_error("{{ x | tojson }}"), "t.jinja:1:8: filter 'tojson': Object of type Undefined is not JSON serializable");
  EXPECT_EQ(jinja_error("{{ [].append(1) }}"),
            "t.jinja:1:6: list.append() modifies the list, which transformers' sandboxed renderer forbids");
  EXPECT_EQ(jinja_error("{% set ns.x = 1 %}"), "t.jinja:1:4: cannot assign attribute 'x' on 'ns': it is not a namespace() object");
}

TEST(JinjaErrors, HugeRangeIsRefused) {
  EXPECT_EQ(jinja_error("{% for i in range(1000000000) %}{% endfor %}"),
            "t.jinja:1:13: range too big: 1000000000 items; the sandbox allows at most 100000");
}

TEST(JinjaErrors, EndlessLoopIsStopped) {
  EXPECT_EQ(jinja_error("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
            "t.jinja:1:32: for loops ran more than 1000000 iterations (an endless loop?)");
}

TEST(JinjaErrors, EndlessRecursionIsStopped) {
  EXPECT_EQ(jinja_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "t.jinja:1:4: macro calls nest deeper than 100 (endless recursion in 'f'?)");
}

TEST(JinjaErrors, OutputSizeIsBounded) {
  chat::ChatRenderOptions options;
  options.limits.max_output_bytes = 1000;
  try {
    chat::chat_template_render("{% for i in range(100) %}{{ 'x' * 20 }}{% endfor %}", nlohmann::ordered_json::array(),
                               options, "t.jinja");
    FAIL() << "expected the output limit to stop the rendering";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "t.jinja:1:26: the rendering exceeds 1000 bytes (an endless loop or recursion?)");
  }
  options.limits.max_output_bytes = 2000;  // the same template fits under a larger limit
  EXPECT_EQ(chat::chat_template_render("{% for i in range(100) %}{{ 'x' * 20 }}{% endfor %}",
                                       nlohmann::ordered_json::array(), options, "t.jinja").size(), 2000u);
}

TEST(JinjaErrors, StringGrowthIsBounded) {
  // Doubling a string 40 times would need a terabyte; it stops at 64 MB instead.
  EXPECT_EQ(jinja_error("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
            "t.jinja:1:76: a string longer than 64 MB was built (an endless loop?)");
}

TEST(JinjaErrors, IntegerOverflowIsAnErrorNotAWrongNumber) {
  // Python's ints are unbounded; the renderer's stop at 64 bits and says so.
  EXPECT_EQ(jinja_error("{{ 10 ** 20 }}"), "t.jinja:1:7: integer overflow: the result of ** does not fit in 64 bits");
  EXPECT_EQ(jinja_error("{{ 9223372036854775807 + 1 }}"),
            "t.jinja:1:24: integer overflow: the result of + does not fit in 64 bits");
  EXPECT_EQ(jinja("{{ 1 ** 1000000000000 }} {{ (-2) ** 3 }} {{ 0 ** 0 }}"), "1 -8 1");
}

TEST(JinjaErrors, DeepNestingIsRefusedNotRecursed) {
  std::string deep = "{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}";
  EXPECT_NE(jinja_error(deep).find("template nests deeper than 200 levels"), std::string::npos);
}

TEST(JinjaErrors, BadInputsNameWhatWasExpected) {
  EXPECT_THROW(chat::chat_template_render("x", nlohmann::ordered_json::object()), Error);  // messages not a list
  chat::ChatRenderOptions options;
  options.tools = nlohmann::ordered_json::object();
  EXPECT_THROW(chat::chat_template_render("x", nlohmann::ordered_json::array(), options), Error);
}

}  // namespace
}  // namespace reglage::test
