"""Build YOLO, SAM 2.1, Depth Anything V2 and ZoeDepth checkpoints with RANDOM weights.

For tests and benchmarks only. Model weights cannot be downloaded on CI machines or on the
offline GPU benchmark node, so the plumbing (loading from a local folder, processors,
batching, post-processing) is exercised with models built from their configs: ``--size real``
gives the architectures of the default checkpoints (``yolo11n.pt`` with the 80 COCO
classes, ``facebook/sam2.1-hiera-tiny``,
``depth-anything/Depth-Anything-V2-Small-hf``, ``Intel/zoedepth-nyu-kitti``: the same compute),
``--size tiny`` much smaller ones for CPU tests. Their outputs are meaningless; production
code never builds random weights (:mod:`modomo.models.weights` refuses configs), and these
folders are passed to it as local weight paths.

    python scripts/build_random_models.py OUT_DIR [--size tiny|real]

writes ``OUT_DIR/yolo.pt``, ``OUT_DIR/sam2``, ``OUT_DIR/depth_anything`` and
``OUT_DIR/zoedepth``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["build"]


def _yolo(out: Path, size: str) -> None:
    from ultralytics import YOLO
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    # yolo11n either way: it is already small enough for CPU tests.
    model = YOLO("yolo11n.yaml", task="detect")
    names = YAML.load(check_yaml("coco.yaml"))["names"]
    model.model.names = dict(names)
    model.save(out)


def _sam2(out: Path, size: str) -> None:
    from transformers import Sam2Config, Sam2ImageProcessor, Sam2Model, Sam2Processor

    config = Sam2Config()  # the defaults are the Hiera-tiny architecture of sam2.1-hiera-tiny
    if size == "tiny":
        vision = config.vision_config
        vision.backbone_config.hidden_size = 16
        vision.backbone_config.embed_dim_per_stage = [16, 32, 64, 128]
        vision.backbone_config.blocks_per_stage = [1, 1, 1, 1]
        vision.backbone_config.num_attention_heads_per_stage = [1, 1, 1, 1]
        vision.backbone_channel_list = [128, 64, 32, 16]
        vision.fpn_hidden_size = 256
        # 256-pixel inputs instead of 1024: 16x less encoder work on a CPU
        vision.backbone_config.image_size = [256, 256]
        vision.backbone_feature_sizes = [[64, 64], [32, 32], [16, 16]]
        config.prompt_encoder_config.image_size = 256
        config.image_size = 256
    model = Sam2Model(config).eval()
    model.save_pretrained(out)
    side = 1024 if size == "real" else 256
    processor = Sam2ImageProcessor(size={"height": side, "width": side})
    Sam2Processor(image_processor=processor, target_size=side).save_pretrained(out)


def _depth_anything(out: Path, size: str) -> None:
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    # Depth-Anything-V2-Small: DINOv2 ViT-S/14 backbone, DPT head (the config's defaults).
    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(
            hidden_size=384,
            num_attention_heads=6,
            num_hidden_layers=12,
            image_size=518,
            patch_size=14,
            out_features=["stage3", "stage6", "stage9", "stage12"],
            reshape_hidden_states=False,
        )
    )
    if size == "tiny":
        config.backbone_config.num_hidden_layers = 4
        config.backbone_config.out_features = ["stage1", "stage2", "stage3", "stage4"]
        config.backbone_config.hidden_size = 96
        config.backbone_config.num_attention_heads = 2
        config.reassemble_hidden_size = 96
        config.neck_hidden_sizes = [24, 48, 96, 96]
        config.fusion_hidden_size = 32
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(out)
    side = 518 if size == "real" else 140
    DPTImageProcessor(
        size={"height": side, "width": side},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out)


def _zoedepth(out: Path, size: str) -> None:
    from transformers import (
        BeitConfig,
        ZoeDepthConfig,
        ZoeDepthForDepthEstimation,
        ZoeDepthImageProcessor,
    )

    config = ZoeDepthConfig()  # the defaults are zoedepth-nyu-kitti's BEiT-L/384
    if size == "tiny":
        config.backbone_config = BeitConfig(
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=128,
            image_size=384,
            out_indices=[1, 2, 3, 4],
            use_relative_position_bias=True,
            reshape_hidden_states=False,
        )
        config.neck_hidden_sizes = [32, 64, 128, 128]
        config.reassemble_hidden_size = 64
        config.fusion_hidden_size = 32
        config.bottleneck_features = 32
    ZoeDepthForDepthEstimation(config).eval().save_pretrained(out)
    side = 384 if size == "real" else 128
    ZoeDepthImageProcessor(size={"height": side, "width": side}).save_pretrained(out)


def build(out: Path, size: str = "tiny") -> dict[str, Path]:
    """Write the three random-weight checkpoints under ``out``; returns their folders."""
    import torch

    torch.manual_seed(0)
    folders = {
        "yolo": out / "yolo.pt",
        "sam2": out / "sam2",
        "depth_anything": out / "depth_anything",
        "zoedepth": out / "zoedepth",
    }
    out.mkdir(parents=True, exist_ok=True)
    _yolo(folders["yolo"], size)
    _sam2(folders["sam2"], size)
    _depth_anything(folders["depth_anything"], size)
    _zoedepth(folders["zoedepth"], size)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=("tiny", "real"), default="tiny")
    args = parser.parse_args()
    for name, folder in build(args.out, args.size).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
