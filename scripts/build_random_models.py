"""Build YOLO, SAM 2.1, Depth Anything V2, ZoeDepth, CLIP, Grounding DINO, OWLv2 and YOLOE
checkpoints with RANDOM weights.

For tests and benchmarks only. Model weights cannot be downloaded on CI machines or on the
offline GPU benchmark node, so the plumbing (loading from a local folder, processors,
batching, post-processing) is exercised with models built from their configs: ``--size real``
gives the architectures of the default checkpoints (``yolo11n.pt`` with the 80 COCO
classes, ``facebook/sam2.1-hiera-tiny``, ``depth-anything/Depth-Anything-V2-Small-hf``,
``Intel/zoedepth-nyu-kitti``, ``openai/clip-vit-base-patch32``: the same compute),
``--size tiny`` much smaller ones for CPU tests. Their outputs are meaningless; production
code never builds random weights (:mod:`modomo.models.weights` refuses configs), and these
folders are passed to it as local weight paths.

    python scripts/build_random_models.py OUT_DIR [--size tiny|real]

writes ``OUT_DIR/yolo.pt``, ``OUT_DIR/sam2``, ``OUT_DIR/depth_anything``,
``OUT_DIR/zoedepth``, ``OUT_DIR/clip``, ``OUT_DIR/grounding_dino``, ``OUT_DIR/owlv2``,
``OUT_DIR/yoloe.pt`` and
``OUT_DIR/mobileclip_blt.ts`` (a stand-in for YOLOE's text encoder, see ``_yoloe``).

CLIP's tokenizer cannot be downloaded either: ``OUT_DIR/clip`` gets a minimal byte-level BPE
vocabulary (the 256 byte characters, each also as a word end ``</w>``, and the two special
tokens; no merges), so every text tokenizes, one token per character. The real vocabulary
has 49,408 tokens; the text model's embedding table keeps that size with ``--size real``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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


def _byte_level_vocab() -> dict[str, int]:
    """A minimal CLIP vocabulary: the byte-level characters (GPT-2's ``bytes_to_unicode``),
    the same with the word-end suffix ``</w>``, then ``<|startoftext|>``, ``<|endoftext|>``."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = iter(range(256, 512))  # the other bytes map past 255, in order
    chars = [chr(byte if byte in printable else next(shifted)) for byte in range(256)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}


def _clip(out: Path, size: str) -> None:
    import json

    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    vocab = _byte_level_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    # The defaults are clip-vit-base-patch32: ViT-B/32 at 224 pixels, a 12-layer 512-wide
    # text transformer over 77 tokens, projection_dim 512. The pooled text token is the
    # first end-of-text token, so the text config names this vocabulary's ids.
    text: dict[str, Any] = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    vision: dict[str, Any] = {}
    side = 224 if size == "real" else 64
    if size == "tiny":
        small = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        }
        text.update(small, vocab_size=len(vocab))
        vision.update(small, patch_size=32, image_size=side)
    text_config = CLIPTextConfig(**text)
    vision_config = CLIPVisionConfig(**vision)
    assert text_config.vocab_size >= len(vocab)
    assert text_config.max_position_embeddings == 77
    assert vision_config.image_size == side
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=512,
    )
    CLIPModel(config).eval().save_pretrained(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _grounding_dino(out: Path, size: str) -> None:
    """Grounding DINO: the defaults are grounding-dino-tiny's architecture (Swin-T image
    backbone, BERT-base text encoder, 900 queries, 256 text tokens). Its BERT vocabulary
    cannot be downloaded: the tokenizer gets a WordPiece vocabulary of the words of the
    taxonomy's prompts (with ``--size real`` the embedding table keeps BERT's 30,522 rows)."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    from modomo.analysis.taxonomy import PROMPTS

    words = sorted({w for prompts in PROMPTS.values() for p in prompts for w in p.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    image_processor = GroundingDinoImageProcessor()
    if size == "real":
        config = GroundingDinoConfig()
    else:
        config = GroundingDinoConfig(
            backbone_config=SwinConfig(
                embed_dim=24,
                depths=[1, 1, 1, 1],
                num_heads=[1, 1, 1, 1],
                out_features=["stage2", "stage3", "stage4"],
            ),
            text_config=BertConfig(
                vocab_size=len(vocab),
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            ),
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,  # the box heads are tied across layers: at least two
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_n_points=2,
            decoder_n_points=2,
            num_queries=50,
        )
        image_processor = GroundingDinoImageProcessor(
            size={"shortest_edge": 256, "longest_edge": 400}
        )
    GroundingDinoForObjectDetection(config).eval().save_pretrained(out)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        out
    )


def _owlv2(out: Path, size: str) -> None:
    """OWLv2: the defaults are owlv2-base-patch16's architecture (ViT-B/16 at 960 pixels, a
    12-layer 512-wide text transformer over 16 tokens). Its CLIP tokenizer gets the minimal
    byte-level vocabulary of ``_clip`` (one token per character: long prompts are cut at 16
    tokens, as the real tokenizer cuts longer ones)."""
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    vocab = _byte_level_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    text: dict[str, Any] = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": 0}
    side = 960  # owlv2-base-patch16: 960-pixel inputs, 60x60 patches
    vision: dict[str, Any] = {"image_size": side, "patch_size": 16}
    if size == "tiny":
        side = 128
        small = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
        }
        text.update(small, vocab_size=len(vocab))
        vision.update(small, patch_size=16, image_size=side)
    # the class head compares projected text embeddings with image features mapped to the
    # text width: OWLv2's projection_dim equals its text width (512)
    config = Owlv2Config(
        text_config=text, vision_config=vision, projection_dim=text.get("hidden_size", 512)
    )
    Owlv2ForObjectDetection(config).eval().save_pretrained(out)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    image_processor = Owlv2ImageProcessor(size={"height": side, "width": side})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _yoloe(out: Path, text_encoder: Path, size: str) -> None:
    """YOLOE-11s (``yoloe-11s.yaml``, either size: small enough for CPU tests) and a
    stand-in for its MobileCLIP text encoder: MobileCLIP's TorchScript file cannot be
    downloaded or built from a config, so ``mobileclip_blt.ts`` here is a random-weight text
    encoder with the same interface (CLIP token ids (N, 77) int64 -> (N, 512) unit vectors):
    token embeddings averaged over the caption, projected, normalised."""
    import warnings

    import torch
    from ultralytics import YOLOE

    # the detection head only: ultralytics drops a segmentation model's boxes whose masks are
    # empty, which random mask prototypes always are (Modomo's masks come from SAM anyway)
    YOLOE("yoloe-11s.yaml").save(out)

    class TextEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(49408, 512)  # CLIP's BPE vocabulary
            self.projection = torch.nn.Linear(512, 512)

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            used = (text > 0).unsqueeze(-1).float()
            pooled = (self.embedding(text) * used).sum(1) / used.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(self.projection(pooled), dim=-1)

    with warnings.catch_warnings():  # MobileCLIP's own file is TorchScript: so is this one
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
        torch.jit.script(TextEncoder().eval()).save(str(text_encoder))


def build(out: Path, size: str = "tiny") -> dict[str, Path]:
    """Write the random-weight checkpoints under ``out``; returns their paths (keys ``yolo``,
    ``sam2``, ``depth_anything``, ``zoedepth``, ``clip``, ``grounding_dino``, ``owlv2``,
    ``yoloe`` and ``yoloe_text_encoder``)."""
    import torch

    torch.manual_seed(0)
    folders = {
        "yolo": out / "yolo.pt",
        "sam2": out / "sam2",
        "depth_anything": out / "depth_anything",
        "zoedepth": out / "zoedepth",
        "clip": out / "clip",
        "grounding_dino": out / "grounding_dino",
        "owlv2": out / "owlv2",
        "yoloe": out / "yoloe.pt",
        "yoloe_text_encoder": out / "mobileclip_blt.ts",
    }
    out.mkdir(parents=True, exist_ok=True)
    _yolo(folders["yolo"], size)
    _sam2(folders["sam2"], size)
    _depth_anything(folders["depth_anything"], size)
    _zoedepth(folders["zoedepth"], size)
    _clip(folders["clip"], size)
    _grounding_dino(folders["grounding_dino"], size)
    _owlv2(folders["owlv2"], size)
    _yoloe(folders["yoloe"], folders["yoloe_text_encoder"], size)
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
