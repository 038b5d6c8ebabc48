// Greedy generation with transformers.js (@huggingface/transformers) on a local onnx-community folder.
//
// usage: node florence2_generate.mjs SPEC.json
// SPEC: {"model_dir": "...", "cases": [{"pixel_values": "x.f32", "pixel_shape": [1, 3, H, W],
//        "input_ids": [[...]], "prompt": "...", "max_new_tokens": N}, ...]}
// pixel_values is a raw little-endian float32 file (the runtime's preprocessing), input_ids the
// prompt ids (<s> prompt </s>), so that the comparison is about the model, not about preprocessing.
// Prints {"ids": [[...], ...], "prompt_ids": [[...], ...]} (one row per case) on stdout: the generated
// ids, and transformers.js' own tokenisation of each prompt (to compare with the runtime's input_ids).
import fs from 'node:fs';
import path from 'node:path';
import { env, AutoTokenizer, Florence2ForConditionalGeneration, Tensor } from '@huggingface/transformers';

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const modelDir = path.resolve(spec.model_dir);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(modelDir) + path.sep;

const model = await Florence2ForConditionalGeneration.from_pretrained(path.basename(modelDir), {
    dtype: 'fp32', device: 'cpu',
});

const tokenizer = await AutoTokenizer.from_pretrained(path.basename(modelDir));

const ids = [], prompt_ids = [];
for (const c of spec.cases) {
    prompt_ids.push(Array.from(tokenizer.encode(c.prompt), Number));
    const buf = fs.readFileSync(c.pixel_values);
    const pixels = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const rows = c.input_ids.length, cols = c.input_ids[0].length;
    const input_ids = new Tensor('int64', BigInt64Array.from(c.input_ids.flat().map(BigInt)), [rows, cols]);
    const attention_mask = new Tensor('int64', new BigInt64Array(rows * cols).fill(1n), [rows, cols]);
    const out = await model.generate({
        input_ids, attention_mask,
        pixel_values: new Tensor('float32', pixels, c.pixel_shape),
        max_new_tokens: c.max_new_tokens, num_beams: 1, do_sample: false,
    });
    ids.push(...out.tolist().map(row => row.map(Number)));
}
console.log(JSON.stringify({ ids, prompt_ids }));
