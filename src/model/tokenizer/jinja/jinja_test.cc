// The Jinja subset, construct by construct; expected outputs are what Jinja2
// (with transformers' trim_blocks/lstrip_blocks settings) prints.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/tokenizer/jinja/template.h"

namespace crescent::jinja {
namespace {

std::string Render(const std::string& source, const std::string& context_json = "{}") {
  auto t = Template::Parse(source);
  if (!t.ok()) return "PARSE ERROR: " + t.status().message();
  auto r = t->Render(Value::FromJson(nlohmann::ordered_json::parse(context_json)));
  if (!r.ok()) return "RENDER ERROR: " + r.status().message();
  return *r;
}

TEST(JinjaTest, ExpressionsFollowPython) {
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"),
            "7 3 -4 -2 3.5 1024");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ none }} {{ 'ab' * 2 }} {{ [1] + [2] }} {{ 1.0 }} {{ 0.1 + 0.2 }}"),
            "a1None abab [1, 2] 1.0 0.30000000000000004");
  EXPECT_EQ(Render("{{ 1 == 1.0 }} {{ 'a' in 'cat' }} {{ 3 not in [1, 2] }} {{ none or 'x' }} {{ 0 and 1 }}"),
            "True True True x 0");
  EXPECT_EQ(Render("{{ 'yes' if x else 'no' }}|{{ 'only' if false }}|", R"({"x": [0]})"), "yes||");
  EXPECT_EQ(Render("{{ {'b': 1, 'a': [true, none, 'q\\'s']} }}"), "{'b': 1, 'a': [True, None, \"q's\"]}");
}

TEST(JinjaTest, SlicingAndIndexing) {
  const std::string ctx = R"({"xs": [1, 2, 3, 4], "s": "héllo"})";
  EXPECT_EQ(Render("{{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::2] }} {{ xs[-1] }} {{ xs[10] is defined }}", ctx),
            "[4, 3, 2, 1] [2, 3, 4] [1, 2, 3] [1, 3] 4 False");
  EXPECT_EQ(Render("{{ s[1] }} {{ s[::-1] }} {{ s | length }} {{ s[1:3] }}", ctx), "é olléh 5 él");
}

TEST(JinjaTest, ForLoopVariablesElseAndControl) {
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ '' if loop.last else ',' }}{% endfor %}",
                   R"({"xs": ["a", "b", "c"]})"),
            "1/3,2/3,3/3");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}"
                   "{{ x }}{% endfor %}"),
            "0134");
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"z": 1, "a": 2}})"),
            "z=1;a=2;");
  EXPECT_EQ(Render("{% for x in xs if x is odd %}{{ loop.index0 }}{{ loop.previtem }}{% endfor %}", R"({"xs": [1, 2, 3]})"),
            "011");
  EXPECT_EQ(Render("{% for x in 'ab' %}{{ loop.cycle('o', 'e') }}{{ x }}{% endfor %}"), "oaeb");
}

TEST(JinjaTest, SetScopesAndNamespace) {
  // A set inside a loop does not leak out; a namespace attribute does.
  EXPECT_EQ(Render("{% set x = 1 %}{% set ns = namespace(y=1) %}{% for i in [1, 2] %}{% set x = 5 %}"
                   "{% set ns.y = ns.y + i %}{% endfor %}{{ x }} {{ ns.y }}"),
            "1 4");
  EXPECT_EQ(Render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(Render("{% set block %}in {{ 'side' }}{% endset %}[{{ block }}]"), "[in side]");
  EXPECT_EQ(Render("{% set d = {} %}{% set d.x = 1 %}"), "RENDER ERROR: template line 1: cannot set attribute 'x' on 'd': only namespace() objects take attributes (in '{% set d.x %}')");
}

TEST(JinjaTest, MacrosWithDefaultsKeywordsAndCaller) {
  EXPECT_EQ(Render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}"),
            "Hi A! Hi B? Hi C!");
  EXPECT_EQ(Render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}inner{% endcall %}"), "[inner]");
  EXPECT_EQ(Render("{% macro f(n) %}{{ n }}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}"), "3210");
}

TEST(JinjaTest, WhitespaceControlLikeTransformers) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indent before it.
  EXPECT_EQ(Render("<ul>\n  {% for x in [1, 2] %}\n  <li>{{ x }}</li>\n  {% endfor %}\n</ul>\n"),
            "<ul>\n  <li>1</li>\n  <li>2</li>\n</ul>");
  EXPECT_EQ(Render("a  {{- ' b ' -}}  c"), "a b c");
  EXPECT_EQ(Render("a\n  {%- if true -%}\n  b\n{%- endif %}\nc"), "abc");
  EXPECT_EQ(Render("a {#- comment -#} b"), "ab");
  EXPECT_EQ(Render("{% raw %}{{ not rendered }}{% endraw %}"), "{{ not rendered }}");
  EXPECT_EQ(Render("  {%+ if true %}x{% endif %}"), "  x");
}

TEST(JinjaTest, Filters) {
  const std::string ctx = R"({"tools": [{"name": "f", "args": {"b": 1, "a": "é\n"}}], "xs": [3, 1, 2], "s": "  pad  "})";
  EXPECT_EQ(Render("{{ tools[0] | tojson }}", ctx), R"({"name": "f", "args": {"b": 1, "a": "é\n"}})");
  EXPECT_EQ(Render("{{ tools[0].args | tojson(indent=2) }}", ctx), "{\n  \"b\": 1,\n  \"a\": \"é\\n\"\n}");
  EXPECT_EQ(Render("{{ xs | tojson(sort_keys=true) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", ctx),
            R"([3, 1, 2] {"a": 2, "b": 1})");
  EXPECT_EQ(Render("[{{ s | trim }}] {{ xs | length }} {{ xs | join('-') }} {{ xs | sort | list }} {{ xs | first }}"
                   " {{ xs | last }} {{ xs | max }} {{ 5 | string }}{{ xs | reverse | list }}",
                   ctx),
            "[pad] 3 3-1-2 [1, 2, 3] 3 2 3 5[2, 1, 3]");
  EXPECT_EQ(Render("{{ tools | map(attribute='name') | join(',') }} {{ tools | selectattr('name', 'equalto', 'f') | list | length }}"
                   " {{ undefined_thing | default('dflt') }} {{ 'ab' | upper }} {{ 'a b' | replace(' ', '_') }}",
                   ctx),
            "f 1 dflt AB a_b");
  EXPECT_EQ(Render("{% for k, v in tools[0].args | items %}{{ k }}{% endfor %} {{ '<&>' | e }}", ctx), "ba &lt;&amp;&gt;");
  EXPECT_EQ(Render("{% filter upper %}shout{% endfilter %}"), "SHOUT");
}

TEST(JinjaTest, StringMethods) {
  EXPECT_EQ(Render("{{ s.startswith('<t') }} {{ s.endswith(('x', '>')) }} {{ s.split('>')[0] }} {{ s.split() }}",
                   R"({"s": "<t> a  b <u>"})"),
            "True True <t ['<t>', 'a', 'b', '<u>']");
  EXPECT_EQ(Render("[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip('\\n ') }}][{{ s.strip('\\nx') }}]",
                   R"({"s": "\n x \n"})"),
            "[x][x \n][\n x][ x ]");
  EXPECT_EQ(Render("{{ 'a-b-c'.replace('-', '+', 1) }} {{ 'Hello'.lower() }} {{ 'x'.upper() }} {{ 'a,b'.split(',', 1) }}"
                   " {{ 'ab'.find('b') }} {{ '{} and {}'.format(1, 'x') }} {{ 'hello world'.title() }}"),
            "a+b-c hello X ['a', 'b'] 1 1 and x Hello World");
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(Render("{{ x is defined }} {{ y is defined }} {{ n is none }} {{ s is string }} {{ d is mapping }}"
                   " {{ xs is iterable }} {{ 3 is odd }} {{ 4 is divisibleby 2 }} {{ n is not none }} {{ t is true }}"
                   " {{ x is number }} {{ x is integer }}",
                   R"({"x": 1, "n": null, "s": "", "d": {}, "xs": [], "t": true})"),
            "True False True True True True True True False True True True");
}

TEST(JinjaTest, UndefinedBehavesLikeJinja2) {
  EXPECT_EQ(Render("[{{ missing }}]{% if missing %}x{% endif %}{% for m in missing %}y{% endfor %}"
                   "{{ d.nokey is defined }}",
                   R"({"d": {}})"),
            "[]False");
  EXPECT_EQ(Render("{{ missing.attr }}"),
            "RENDER ERROR: template line 1: 'missing' is undefined (reading attribute 'attr')");
  EXPECT_EQ(Render("\n\n{{ 1 + missing }}"), "RENDER ERROR: template line 3: 'missing' is undefined (operator +)");
}

TEST(JinjaTest, ErrorsGiveLineAndConstruct) {
  EXPECT_EQ(Render("a\n{% if %}"), "PARSE ERROR: template line 2: expected an expression, got '%}'");
  EXPECT_EQ(Render("{% for x in xs %}\n{% endif %}"),
            "PARSE ERROR: template line 2: unknown or unsupported tag '{% endif %}'");
  EXPECT_EQ(Render("{% include 'x' %}"), "PARSE ERROR: template line 1: unknown or unsupported tag '{% include %}'");
  EXPECT_EQ(Render("x\ny\n{{ raise_exception('bad role') }}"), "RENDER ERROR: template line 3: raise_exception: bad role");
  EXPECT_EQ(Render("{{ 'a' + 1 }}"), "RENDER ERROR: template line 1: unsupported operand types for +: 'str' and 'int'");
  EXPECT_EQ(Render("{{ foo() }}"), "RENDER ERROR: template line 1: 'foo' is undefined (called as a function)");
}

TEST(JinjaTest, HostileTemplatesHitLimitsInsteadOfHanging) {
  auto t = Template::Parse("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
  ASSERT_TRUE(t.ok());
  RenderLimits limits;
  limits.max_steps = 100000;
  auto r = t->Render(Value(), limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("steps"), std::string::npos);
  auto deep = Template::Parse("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("nests deeper"), std::string::npos);
  auto recursion = Template::Parse("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
  ASSERT_TRUE(recursion.ok());
  EXPECT_FALSE(recursion->Render(Value()).ok());
}

}  // namespace
}  // namespace crescent::jinja
