// Focused renderer tests: each expectation was computed by hand from Python/jinja2 semantics (and checked
// once against transformers' jinja environment): whitespace control with trim_blocks/lstrip_blocks,
// operators, Python printing, slicing, tests, filters, transformers' tojson, loops, scoping, macros, methods.
#include "tests/unit/test_jinja_util.h"

namespace reglage::test {
namespace {

TEST(JinjaRender, WhitespaceControlAndTrimBlocks) {
  EXPECT_EQ(jinja(R"J({% if true %}
  yes
{% endif %}
)J", R"J({})J"),
            R"J(  yes
)J");
  EXPECT_EQ(jinja(R"J(a  {%- if true -%}  b  {%- endif %}  c)J", R"J({})J"),
            R"J(ab  c)J");
  EXPECT_EQ(jinja(R"J(x {{- ' y ' -}} z)J", R"J({})J"),
            R"J(x y z)J");
  EXPECT_EQ(jinja(R"J(  {{ 1 }}
  {% if true %}t{% endif %})J", R"J({})J"),
            R"J(  1
t)J");
  EXPECT_EQ(jinja(R"J(  {%+ if true %}x{% endif %})J", R"J({})J"),
            R"J(  x)J");
  EXPECT_EQ(jinja(R"J(a {# c #} b|a
  {# c #}
b)J", R"J({})J"),
            R"J(a  b|a
b)J");
  EXPECT_EQ(jinja(R"J({{ 'a' }}
{{ 'b' }}
)J", R"J({})J"),
            R"J(a
b)J");
}

TEST(JinjaRender, Arithmetic) {
  EXPECT_EQ(jinja(R"J({{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 1 / 2 }} {{ 4 / 2 }} {{ 2 * 'ab' }})J", R"J({})J"),
            R"J(7 3 -4 -2 1024 0.5 2.0 abab)J");
  EXPECT_EQ(jinja(R"J({{ 1.0 }} {{ 1e-05 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 3 * 1.5 }} {{ 123456789.0 * 10 }} {{ 0.0001 }})J", R"J({})J"),
            R"J(1.0 1e-05 0.30000000000000004 1e+16 4.5 1234567890.0 0.0001)J");
}

TEST(JinjaRender, PrintsLikePython) {
  EXPECT_EQ(jinja(R"J({{ 'a' ~ 1 ~ none ~ true ~ undefined_name }})J", R"J({})J"),
            R"J(a1NoneTrue)J");
  EXPECT_EQ(jinja(R"J({{ [1, 'a', none, true, {'k': 'v'}, 2.0] }})J", R"J({})J"),
            R"J([1, 'a', None, True, {'k': 'v'}, 2.0])J");
  EXPECT_EQ(jinja(R"J({{ "it's" }} {{ ["it's", 'say "hi"', 'a\nb'] }})J", R"J({})J"),
            R"J(it's ["it's", 'say "hi"', 'a\nb'])J");
}

TEST(JinjaRender, Slicing) {
  EXPECT_EQ(jinja(R"J({{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3,4,5][-2:] }} {{ [1,2,3,4,5][::2] }} {{ 'héllo'[1] }} {{ [1,2,3][-1] }} {{ [1,2,3][5:] }} {{ 'abc'[:-1] }})J", R"J({})J"),
            R"J(el olleh [4, 5] [1, 3, 5] é 3 [] ab)J");
}

TEST(JinjaRender, ComparisonsAndLogic) {
  EXPECT_EQ(jinja(R"J({{ 1 < 2 < 3 }} {{ 'a' in 'cat' }} {{ 2 not in [1, 3] }} {{ 1 == 1.0 }} {{ 'x' if false else 'y' }} [{{ 'x' if false }}] {{ 'a' in {'a': 1} }})J", R"J({})J"),
            R"J(True True True True y [] True)J");
  EXPECT_EQ(jinja(R"J({{ 0 or 'b' }} {{ 'a' and 'b' }} {{ not none }} {{ [] or {} }})J", R"J({})J"),
            R"J(b b True {})J");
}

TEST(JinjaRender, FilterBindsTighterThanOperators) {
  EXPECT_EQ(jinja(R"J({{ ' a ' | trim + 'b' }} {{ -3 | abs }} {{ 'x' ~ 'y' | upper }})J", R"J({})J"),
            R"J(ab 3 xY)J");
}

TEST(JinjaRender, StringEscapes) {
  EXPECT_EQ(jinja(R"J({{ 'a\nb\t\u00e9\x41\\' }})J", R"J({})J"),
            R"J(a
b	éA\)J");
}

TEST(JinjaRender, Tests) {
  EXPECT_EQ(jinja(R"J({{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} {{ 1.5 is number }} {{ true is boolean }} {{ 3 is equalto 3 }} {{ true is true }} {{ 1 is false }} {{ x is not none }} {{ 1 is string }} {{ 'a' is mapping }})J", R"J({"x": 1})J"),
            R"J(True True True True True True True True True True True False True False False)J");
}

TEST(JinjaRender, StringFilters) {
  EXPECT_EQ(jinja(R"J({{ '  hi  ' | trim }}|{{ 'abc' | upper }}|{{ 'ABC' | lower }}|{{ 'hello World' | capitalize }}|{{ 'hello world-wide' | title }})J", R"J({})J"),
            R"J(hi|ABC|abc|Hello world|Hello World-Wide)J");
  EXPECT_EQ(jinja(R"J({{ [1,2,3] | length }} {{ 'héllo' | length }} {{ {'a':1} | length }} {{ nothing | length }})J", R"J({})J"),
            R"J(3 5 1 0)J");
  EXPECT_EQ(jinja(R"J({{ x | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ none | default('d') }})J", R"J({})J"),
            R"J(d||d|None)J");
}

TEST(JinjaRender, ItemsJoinFirstLast) {
  EXPECT_EQ(jinja(R"J({% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}{{ ['a','b'] | join(', ') }} {{ [{'n':'x'},{'n':'y'}] | join('-', attribute='n') }} {{ [1, 2] | join }})J", R"J({})J"),
            R"J(a=1;b=2;a, b x-y 12)J");
  EXPECT_EQ(jinja(R"J({{ [1,2,3] | first }} {{ [1,2,3] | last }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'aaa' | replace('a', 'c') }})J", R"J({})J"),
            R"J(1 3 bba ccc)J");
}

TEST(JinjaRender, StringAndInt) {
  EXPECT_EQ(jinja(R"J({{ 12 | string + 'x' }} {{ '42' | int + 1 }} {{ '4.7' | int }} {{ 'z' | int }} {{ 3.9 | int }} {{ 'z' | int(7) }})J", R"J({})J"),
            R"J(12x 43 4 0 3 7)J");
}

TEST(JinjaRender, SelectattrMapList) {
  EXPECT_EQ(jinja(R"J({{ msgs | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ msgs | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join }} {{ msgs | selectattr('tool') | list | length }} {{ msgs | map(attribute='role') | unique | list }})J", R"J({"msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool": true}, {"role": "user", "content": "c"}]})J"),
            R"J(['a', 'c'] b 1 ['user', 'assistant'])J");
}

TEST(JinjaRender, ToJsonLikeTransformers) {
  EXPECT_EQ(jinja(R"J({{ {'a': [1, 2.5, none, true], 'é': 'ü"\n'} | tojson }})J", R"J({})J"),
            R"J({"a": [1, 2.5, null, true], "é": "ü\"\n"})J");
  EXPECT_EQ(jinja(R"J({{ {'b': 1, 'a': [1, {}], 'c': []} | tojson(indent=2) }})J", R"J({})J"),
            R"J({
  "b": 1,
  "a": [
    1,
    {}
  ],
  "c": []
})J");
  EXPECT_EQ(jinja(R"J({{ {'b': 1, 'a': 'é'} | tojson(sort_keys=true) }} {{ 'é🙂' | tojson(ensure_ascii=true) }} {{ [1, 2] | tojson(separators=(',', ':')) }})J", R"J({})J"),
            R"J({"a": "é", "b": 1} "\u00e9\ud83d\ude42" [1,2])J");
}

TEST(JinjaRender, Indent) {
  EXPECT_EQ(jinja(R"J({{ 'a
b

c' | indent(2) }}|{{ 'a
b' | indent(2, true) }}|{{ 'a

b' | indent(2, blank=true) }})J", R"J({})J"),
            R"J(a
  b

  c|  a
  b|a
  
  b)J");
}

TEST(JinjaRender, LoopVariables) {
  EXPECT_EQ(jinja(R"J({% for x in ['a','b','c'] %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.previtem }}{{ loop.nextitem }} {% endfor %})J", R"J({})J"),
            R"J(01TrueFalse33b 12FalseFalse32ac 23FalseTrue31b )J");
}

TEST(JinjaRender, ForElseAndFilter) {
  EXPECT_EQ(jinja(R"J({% for x in [] %}x{% else %}empty{% endfor %} {% for x in range(6) if x is even %}{{ x }}{{ loop.last }} {% endfor %})J", R"J({})J"),
            R"J(empty 0False 2False 4True )J");
}

TEST(JinjaRender, BreakContinueRange) {
  EXPECT_EQ(jinja(R"J({% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %} {{ range(2, 11, 3) | list }} {{ range(3, 0, -1) | list }})J", R"J({})J"),
            R"J(013 [2, 5, 8] [3, 2, 1])J");
}

TEST(JinjaRender, ScopingAndNamespace) {
  EXPECT_EQ(jinja(R"J({% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }} {% set ns = namespace(x=1) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }} {% if true %}{% set y = 5 %}{% endif %}{{ y }} {% set a, b = [1, 2] %}{{ b }}{{ a }})J", R"J({})J"),
            R"J(1 4 5 21)J");
}

TEST(JinjaRender, BlockSet) {
  EXPECT_EQ(jinja(R"J({% set b %}hi {{ 1 + 1 }}{% endset %}[{{ b }}])J", R"J({})J"),
            R"J([hi 2])J");
}

TEST(JinjaRender, Macro) {
  EXPECT_EQ(jinja(R"J({% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet() }})J", R"J({})J"),
            R"J(Hi A! Hi B? Hi !)J");
}

TEST(JinjaRender, CallBlock) {
  EXPECT_EQ(jinja(R"J({% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold{% endcall %})J", R"J({})J"),
            R"J(<b>bold</b>)J");
}

TEST(JinjaRender, PythonStringAndDictMethods) {
  EXPECT_EQ(jinja(R"J({{ '  x y  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'hello world'.title() }}|{{ 'xxhixx'.lstrip('x') }}|{{ 'aXa'.replace('a', 'b') }}|{{ {'a': 1}.get('a') }}{{ {'a': 1}.get('b', 'z') }}{{ {'a': 1}.get('b') }}|{{ {'a': 1}.keys() | list }}|{{ {'a': 1}.items() | list }}|{{ 'a</think>b'.split('</think>')[-1] }}|{{ 'AbC'.upper() }}{{ 'AbC'.lower() }}|{{ ' x '.rstrip() }}.)J", R"J({})J"),
            R"J(x y|['a', 'b', '', 'c']|['a', 'b']|True|True|Hello World|hixx|bXb|1zNone|['a']|[('a', 1)]|b|ABCabc| x.)J");
}

TEST(JinjaRender, StrftimeNowUsesTheFixedDate) {
  EXPECT_EQ(jinja(R"J({{ strftime_now('%d %b %Y %H:%M') }})J", R"J({})J"),
            R"J(04 Dec 2026 09:30)J");
}

TEST(JinjaRender, GenerationBlockIsPlainContent) {
  EXPECT_EQ(jinja(R"J({% generation %}x{{ 1 }}{% endgeneration %})J", R"J({})J"),
            R"J(x1)J");
}

TEST(JinjaRender, LenientUndefined) {
  EXPECT_EQ(jinja(R"J({{ d.a }}{{ d['b'] }}{{ d.missing }}{{ l[9] }}{{ none_value.x }}|{{ (d.missing is defined) }})J", R"J({"d": {"a": 1, "b": 2}, "l": [], "none_value": null})J"),
            R"J(12|False)J");
}

TEST(JinjaRender, RawBlock) {
  EXPECT_EQ(jinja(R"J(a
  {% raw %}{{ x }} {% if %}{% endraw %}
b)J", R"J({})J"),
            R"J(a
{{ x }} {% if %}b)J");
}

TEST(JinjaRender, FilterBlock) {
  EXPECT_EQ(jinja(R"J({% filter upper %}hello {{ 'x' }}{% endfilter %}|{% filter replace('a', 'b') %}aaa{% endfilter %})J", R"J({})J"),
            R"J(HELLO X|bbb)J");
}

TEST(JinjaRender, CallBlockWithArguments) {
  EXPECT_EQ(jinja(R"J({% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(x) each([1, 2]) %}<{{ x }}>{% endcall %})J", R"J({})J"),
            R"J(<1><2>)J");
}

TEST(JinjaRender, CrLfNewlinesAndTrailingNewline) {
  EXPECT_EQ(jinja("line1\r\n{% if true %}\r\n  x\r\n{% endif %}\r\nend\n", R"J({})J"),
            "line1\n  x\nend");
}

TEST(JinjaRender, TuplesPrintAsTuples) {
  EXPECT_EQ(jinja(R"J({{ (1, 2) }} {{ (1,) }} {{ {'a': 1} | items | list }} {{ (1, 2) | list }})J", R"J({})J"),
            R"J((1, 2) (1,) [('a', 1)] [1, 2])J");
}

}  // namespace
}  // namespace reglage::test
