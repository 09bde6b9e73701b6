#!/usr/bin/env python3
"""Expected chat-template renderings, made with transformers' own jinja environment.

    /work/venv/bin/python tests/data/chat/make_expected.py [--smollm2-gguf PATH]

Renders every template in tests/data/chat/templates/ on every conversation of conversations.json, with
add_generation_prompt off and on, through transformers.utils.chat_template_utils.render_jinja_template (what
apply_chat_template calls). bos/eos tokens are fixed, and strftime_now reads a pinned clock (the module's
`datetime` is replaced by one whose now() is FIXED_DATE), so the C++ renderer can pass the same date.
Conversations that set "tools" pass them as apply_chat_template's tools=. A rendering that raises (a
template's raise_exception, or a template that cannot take that conversation) is recorded as "error" with
the message; the C++ renderer must fail on it too.

--smollm2-gguf extracts SmolLM2-135M-Instruct's template (GGUF key tokenizer.chat_template) into
templates/HuggingFaceTB-SmolLM2-135M-Instruct.jinja first (scripts/get_model.sh smollm2 fetches the model).
Writes expected.json next to this script.
"""
import argparse
import datetime as real_datetime
import json
import os
import sys

import jinja2
import transformers
import transformers.utils.chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_DATE = real_datetime.datetime(2026, 12, 4, 9, 30, 0)
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"


class PinnedDatetime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_DATE


def extract_smollm2(gguf_path):
    import gguf

    reader = gguf.GGUFReader(gguf_path)
    field = reader.fields["tokenizer.chat_template"]
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    out = os.path.join(HERE, "templates", "HuggingFaceTB-SmolLM2-135M-Instruct.jinja")
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    print(f"wrote {out} ({len(text)} chars)")


def render(template, conversation, add_generation_prompt):
    rendered, _ = ctu.render_jinja_template(
        conversations=[conversation["messages"]],
        tools=conversation.get("tools"),
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
    )
    return rendered[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smollm2-gguf", help="extract SmolLM2's template from this GGUF file first")
    args = parser.parse_args()
    if args.smollm2_gguf:
        extract_smollm2(args.smollm2_gguf)

    ctu.datetime = PinnedDatetime  # strftime_now() reads datetime.now()
    with open(os.path.join(HERE, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    template_dir = os.path.join(HERE, "templates")
    names = sorted(n for n in os.listdir(template_dir) if n.endswith(".jinja"))
    cases = []
    for name in names:
        with open(os.path.join(template_dir, name), encoding="utf-8", newline="") as f:
            template = f.read()
        for conversation in conversations:
            for add_generation_prompt in (False, True):
                case = {
                    "template": name,
                    "conversation": conversation["name"],
                    "add_generation_prompt": add_generation_prompt,
                }
                try:
                    case["output"] = render(template, conversation, add_generation_prompt)
                except (jinja2.exceptions.TemplateError, TypeError, ValueError, RecursionError) as e:
                    case["error"] = f"{type(e).__name__}: {e}"
                cases.append(case)
    expected = {
        "made_by": "tests/data/chat/make_expected.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "date": FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%S"),
        "cases": cases,
    }
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} renderings ({len(cases) - errors} outputs, {errors} errors) of {len(names)} templates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
