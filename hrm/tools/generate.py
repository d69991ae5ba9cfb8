"""Generate answers from a checkpoint with the KV-cache engine (docs/prefixlm_packing.md §1 prompt layout,
docs/checkpoints.md §9).

    python -m hrm.tools.generate --checkpoint runs/tiny --prompt "What is 2+3?" [--condition direct]
    python -m hrm.tools.generate --checkpoint random:configs/tiny.yaml --ids 6,8,100,7 --max_new_tokens 8

Each --prompt is wrapped as [BOQ] + condition ids + text + [EOQ] (no chat template) and decoded greedily
unless --temperature >= 1e-5. --ids bypasses the tokenizer and prints raw ids.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="run/checkpoint/step dir, or random:<config.yaml>")
    ap.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    ap.add_argument("--ids", action="append", default=[], help="comma-separated prompt ids (repeatable)")
    ap.add_argument("--condition", default="direct", help="condition tag(s), e.g. direct or synth,cot")
    ap.add_argument("--max_new_tokens", type=int, default=256)
    ap.add_argument("--max_context", type=int, default=0, help="0 = the model's max_seq_len")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--dtype", choices=("bfloat16", "float32"),
                    help="weights/compute/KV-cache dtype (default: the checkpoint config's eval.dtype, as eval.py)")
    ap.add_argument("--no_ema", action="store_true", help="use the raw parameters instead of the EMA")
    ap.add_argument("--tokenizer", help="tokenizer file or directory (default: found from the checkpoint)")
    args = ap.parse_args(argv)
    if not args.prompt and not args.ids:
        ap.error("give at least one --prompt or --ids")
    from hrm.eval.model_loading import checkpoint_info, load_generator  # imports JAX

    if args.dtype is None:
        args.dtype = checkpoint_info(args.checkpoint).config.eval.dtype
    gen, tok, _ = load_generator(args.checkpoint, args)
    prompts = [tok.encode_instruction(p.strip(), args.condition) for p in args.prompt]
    prompts += [[int(x) for x in s.split(",") if x.strip()] for s in args.ids]
    outs = gen.generate(prompts, args.max_new_tokens, args.temperature, args.seed)
    for i, (p, out) in enumerate(zip(prompts, outs)):
        if i < len(args.prompt):
            print(f"### {args.prompt[i]}\n{tok.decode(out)}")
        else:
            print(f"### ids {p}\n{out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
