"""`asarg convert-cxas`: a CXAS / torchxrayvision checkpoint -> ASaRG's CXAS-compatible segmenter (and optionally a
complete ASaRG checkpoint). The conversion itself is `modeling_asarg.convert_cxas_weights`; this is its command line:
the output folder is checked first and written through a staging folder, with `checksums.sha256`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asarg.processing.checkpoints import write_checksums
from asarg.processing.outputs import check_output_dir, staged_dir
from modeling_asarg.configuration_asarg import CXAS_ANATOMY_GROUPS, CXAS_FEATURE_LEVELS, cxas_seg_config
from modeling_asarg.convert_cxas_weights import (
    SEGMENTER_WEIGHTS,
    build_asarg_with_segmenter,
    build_processor_for,
    convert_checkpoint,
    save_segmenter,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asarg convert-cxas",
        description="Convert a CXAS / torchxrayvision chestx_anatomy checkpoint (.pth) into ASaRG's CXAS-compatible "
        "segmenter (safetensors), optionally inside a complete ASaRG checkpoint.",
    )
    parser.add_argument("checkpoint", help="UNet_ResNet50_default.pth (cxas) or *_repack.pth (torchxrayvision)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--feature-level",
        default="feats",
        choices=list(CXAS_FEATURE_LEVELS),
        help="intermediate map that feeds the projector (default: feats, CXAS's 128-channel decoder features)",
    )
    parser.add_argument("--class-names", help="text file, one class name per line (default: CXAS's 159)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--llava", help="also write a full ASaRG checkpoint grown from this LLaVA checkpoint")
    source.add_argument("--asarg", help="also write this ASaRG checkpoint with the converted segmenter in it")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--classes", nargs="+", help="with --llava: the CXAS classes the projector reads")
    selection.add_argument(
        "--groups", choices=["anatomy"], help=f"with --llava: read group maps ({', '.join(CXAS_ANATOMY_GROUPS)})"
    )
    parser.add_argument("--no-seg-maps", action="store_true", help="with --llava: the projector reads no maps")
    parser.add_argument("--no-seg-features", action="store_true", help="with --llava: the projector reads no features")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out that holds files not written here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _convert(args)
    except (OSError, ValueError) as error:  # OutputError, a file that is not a CXAS checkpoint, a misfit
        print(f"asarg convert-cxas: {error}", file=sys.stderr)
        return 2


def _convert(args) -> int:
    inputs = [args.checkpoint, args.llava, args.asarg, args.class_names]
    out = check_output_dir(args.out, inputs, command="convert-cxas", overwrite=args.overwrite)
    class_names = None
    if args.class_names:
        class_names = [n.strip() for n in Path(args.class_names).read_text().splitlines() if n.strip()]
    config, state_dict = convert_checkpoint(args.checkpoint, args.feature_level, class_names)
    model = None
    if args.llava or args.asarg:  # built before anything is written: a misfit writes nothing
        seg_kwargs = None
        if args.llava:
            seg_kwargs = cxas_seg_config(classes=args.classes, groups=args.groups, feature_level=args.feature_level)
            seg_kwargs.pop("segmenter_config")
            seg_kwargs.update(use_seg_maps=not args.no_seg_maps, use_seg_features=not args.no_seg_features)
        model = build_asarg_with_segmenter(
            config, state_dict, llava=args.llava, asarg=args.asarg, seg_kwargs=seg_kwargs
        )
    with staged_dir(out, "convert-cxas", checkpoint=str(Path(args.checkpoint).resolve())) as staging:
        save_segmenter(staging, config, state_dict)
        if model is not None:
            model.save_pretrained(staging)
            processor = build_processor_for(model, args.llava or args.asarg)
            if processor is not None:
                processor.save_pretrained(staging)
            else:
                print(f"note: {args.llava or args.asarg} has no processor; save an AsargProcessor next to the model")
        write_checksums(staging)
    print(f"wrote {out / SEGMENTER_WEIGHTS} ({config.num_classes} classes, features {args.feature_level})")
    if model is not None:
        print(f"wrote an ASaRG checkpoint to {out}")
    return 0


__all__ = ["main"]
