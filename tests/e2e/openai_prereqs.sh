# Sourced by the OpenAI Node client tests (from the repository root): exits
# 77 (ctest: skipped) with a message when node, the npm package `openai`
# (scripts/setup installs it into .cache/node) or the tokenizer files are
# missing.
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed (scripts/setup installs it)"; exit 77
fi
if [ ! -f .cache/node/node_modules/openai/package.json ]; then
  echo "SKIP: npm package openai missing in .cache/node (run scripts/setup)"; exit 77
fi
if [ ! -f .cache/tokenizer-qwen3/tokenizer.json ]; then
  echo "SKIP: .cache/tokenizer-qwen3 missing (run scripts/setup)"; exit 77
fi
