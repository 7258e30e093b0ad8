/**
 * CLIP's tokenizer: the byte-level BPE of a Hugging Face `tokenizer.json` run by
 * @huggingface/tokenizers (pure JS, the tokenizer of transformers.js), with open_clip's framing:
 * `<|startoftext|>` … `<|endoftext|>`, truncated to the context length with the end-of-text token
 * kept last, padded with 0. Both weight layouts use the same vocabulary (OpenAI's
 * bpe_simple_vocab_16e6): the `tokenizer.json` of any Hugging Face CLIP repository works for
 * open_clip weights too (docs/clip.md says where to get one).
 */
import * as fs from 'node:fs';
import { ArgumentError } from '../errors';
import { Tensor } from '../tensor';

interface HfTokenizer {
  encode(text: string, o?: { add_special_tokens?: boolean }): { ids: number[] };
}

export class ClipTokenizer {
  private constructor(
    private readonly tok: HfTokenizer,
    readonly sot: number,
    readonly eot: number,
    readonly vocabSize: number,
    readonly file: string,
  ) {}

  /** Reads a `tokenizer.json`; an ArgumentError naming the file when it is not CLIP's. */
  static fromFile(file: string): ClipTokenizer {
    let json: { model?: { type?: string; vocab?: Record<string, number> }; added_tokens?: Array<{ id: number; content: string }> };
    try {
      json = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof json;
    } catch (e) {
      throw new ArgumentError(`${file}: cannot read a tokenizer.json (${(e as Error).message.split('\n')[0]})`);
    }
    const vocab = json?.model?.vocab;
    if (json?.model?.type !== 'BPE' || typeof vocab !== 'object' || vocab === null)
      throw new ArgumentError(`${file}: not a BPE tokenizer.json (model.type ${JSON.stringify(json?.model?.type)}); CLIP's is byte-level BPE`);
    const special = (name: string): number => {
      const id = vocab[name] ?? json.added_tokens?.find((t) => t.content === name)?.id;
      if (!Number.isSafeInteger(id)) throw new ArgumentError(`${file}: has no ${name} token: not a CLIP tokenizer`);
      return id!;
    };
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Tokenizer } = require('@huggingface/tokenizers') as { Tokenizer: new (j: object, c: object) => HfTokenizer };
    let tok: HfTokenizer;
    try {
      tok = new Tokenizer(json, {});
    } catch (e) {
      throw new ArgumentError(`${file}: @huggingface/tokenizers cannot build it: ${(e as Error).message}`);
    }
    const size = Math.max(...Object.values(vocab), ...(json.added_tokens ?? []).map((t) => t.id)) + 1;
    return new ClipTokenizer(tok, special('<|startoftext|>'), special('<|endoftext|>'), size, file);
  }

  /** Token ids of one text, framed: [sot, …, eot] (no padding, no truncation). */
  ids(text: string): number[] {
    return [this.sot, ...this.tok.encode(text, { add_special_tokens: false }).ids, this.eot];
  }

  /** Token ids [texts.length, contextLength] (int64), as open_clip's tokenizer returns them. */
  encode(texts: readonly string[], contextLength = 77): Tensor {
    if (!Number.isSafeInteger(contextLength) || contextLength < 2) throw new ArgumentError(`contextLength must be an integer >= 2, got ${contextLength}`);
    const out = new BigInt64Array(texts.length * contextLength);
    texts.forEach((t, i) => {
      if (typeof t !== 'string') throw new ArgumentError(`texts[${i}] must be a string`);
      const ids = this.ids(t);
      if (ids.length > contextLength) {
        ids.length = contextLength;
        ids[contextLength - 1] = this.eot;
      }
      ids.forEach((id, j) => (out[i * contextLength + j] = BigInt(id)));
    });
    return Tensor.from(out, [texts.length, contextLength]);
  }
}
