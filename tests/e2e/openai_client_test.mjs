// The official OpenAI Node client against `crescent serve`: completions,
// chat, streaming (with usage), errors. Run by run_openai_client_test.sh.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(path.resolve('.cache/node/package.json'));
const OpenAI = require('openai');
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: 'unused', maxRetries: 0 });

async function main() {
  const models = await client.models.list();
  assert.equal(models.data[0].id, 'tiny');

  const completion = await client.completions.create({
    model: 'tiny', prompt: 'San Francisco is a', max_tokens: 8, temperature: 0, ignore_eos: true,
  });
  assert.equal(completion.object, 'text_completion');
  assert.equal(typeof completion.choices[0].text, 'string');
  assert.equal(completion.choices[0].finish_reason, 'length');
  assert.equal(completion.usage.completion_tokens, 8);

  const again = await client.completions.create({
    model: 'tiny', prompt: 'San Francisco is a', max_tokens: 8, temperature: 0, ignore_eos: true,
  });
  assert.equal(again.choices[0].text, completion.choices[0].text, 'greedy is deterministic');

  const stream = await client.completions.create({
    model: 'tiny', prompt: 'San Francisco is a', max_tokens: 8, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  let streamed = '';
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) streamed += chunk.choices[0].text;
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(streamed, completion.choices[0].text, 'stream equals the non-streamed text');
  assert.equal(usage.completion_tokens, 8);

  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hello!' }];
  const chat = await client.chat.completions.create({
    model: 'tiny', messages, max_completion_tokens: 6, temperature: 0, ignore_eos: true,
    chat_template_kwargs: { enable_thinking: false }, logprobs: true, top_logprobs: 2,
  });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0].message.role, 'assistant');
  assert.equal(chat.usage.completion_tokens, 6);
  assert.equal(chat.choices[0].logprobs.content.length, 6);

  const chatStream = await client.chat.completions.create({
    model: 'tiny', messages, max_completion_tokens: 6, temperature: 0, ignore_eos: true,
    chat_template_kwargs: { enable_thinking: false }, stream: true,
  });
  let content = '';
  let role = null;
  let finish = null;
  for await (const chunk of chatStream) {
    const c = chunk.choices[0];
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) content += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(content, chat.choices[0].message.content, 'chat stream equals the non-streamed content');
  assert.equal(finish, 'length');

  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }),
    (err) => err.status === 404 && /does not exist/.test(err.message));
  await assert.rejects(
    client.completions.create({ model: 'tiny', prompt: 'x', max_tokens: 5000 }),
    (err) => err.status === 400 && /2048/.test(err.message));
  console.log('openai node client e2e: OK');
}

main().catch((err) => { console.error(err); process.exit(1); });
