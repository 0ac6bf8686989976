"""Command line of the converter.

  python -m tools.convert_torch SRC OUT [--variant vit_b] [--num_heads N --num_frames N --image_size N]
                                       [--decoder_num_heads N]  (a pretraining checkpoint's decoder)
  python -m tools.convert_torch --to-hf FLAX_CKPT OUT_DIR [--fold_layer_scale]
  python -m tools.convert_torch --to-original FLAX_CKPT OUT.pth
"""

import argparse
import sys
import time

from tools.convert_torch import HF, ORIGINAL, ConversionError, convert, export


def main(argv=None, prog: str = "python -m tools.convert_torch") -> int:
  parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", help="PyTorch checkpoint (.pth/.bin/.safetensors or HF directory), or with "
                                  "--to-hf/--to-original a gardener_jax checkpoint directory")
  parser.add_argument("out", help="output checkpoint directory (or HF directory / .pth file when exporting)")
  direction = parser.add_mutually_exclusive_group()
  direction.add_argument("--to-hf", dest="to", action="store_const", const=HF, help="export to HuggingFace")
  direction.add_argument("--to-original", dest="to", action="store_const", const=ORIGINAL,
                         help="export to an original-release .pth")
  parser.add_argument("--variant", help="named size that gives what shapes cannot: vit_s, vit_b, vit_l, vit_h")
  for field in ("num_heads", "num_frames", "image_size", "decoder_num_heads"):
    parser.add_argument(f"--{field}", type=int, help=f"{field} when neither the file nor --variant gives it")
  parser.add_argument("--fold_layer_scale", action="store_true",
                      help="--to-hf only: multiply gamma_1/gamma_2 into attn.proj/mlp.fc2 (HF has no layer scale)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
  args = parser.parse_args(argv)

  start = time.perf_counter()
  try:
    if args.to:
      for warning in export(args.src, args.out, args.to, fold_layer_scale=args.fold_layer_scale,
                            overwrite=args.overwrite):
        print(f"warning: {warning}", file=sys.stderr)
      print(f"wrote {args.out} ({args.to} layout) in {time.perf_counter() - start:.2f} s")
    else:
      overrides = dict(num_heads=args.num_heads, num_frames=args.num_frames, image_size=args.image_size,
                       decoder_num_heads=args.decoder_num_heads)
      report = convert(args.src, args.out, variant=args.variant, overrides=overrides, overwrite=args.overwrite)
      c = report["config"]
      print(f"converted {report['source']} ({report['layout']}, {report['kind']}): depth {c['depth']}, width "
            f"{c['width']}, heads {c['num_heads']}, {c['num_classes']} classes, {report['num_params']:,} params, "
            f"{len(report['ignored'])} keys ignored → {args.out} "
            f"in {time.perf_counter() - start:.2f} s")
  except (ConversionError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
