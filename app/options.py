"""The jobs' configuration: one dataclass per job, whose fields are its command-line options
(pipeline/config.py turns them into argparse options and back). `__post_init__` checks
every value, so a bad one fails at start with its option's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.tblog import check_log
from loaders import BACKENDS
from loaders.orientation import ORIENTATIONS
from pipeline.config import check_count, check_positive_int, opt, parse_floats, positive_ints
from pipeline.finetune import FINETUNE_AUGMENTATIONS
from pipeline.fixres import sweep_resolutions
from pipeline.optim import LrSchedule
from pipeline.sizes import ConstantSize, LinearRamp, MixSize, SizePolicy


@dataclass
class CommonConfig:
    data: str = opt(
        "data/demo",
        "ImageNet-layout root holding train/ and val/ (ffcv: or FFCV files "
        "<split>.beton, <split>.ffcv or the one <split>*.ffcv|.beton)",
    )
    train_data: str = opt("", "training split instead of <data>/train: a folder, or for ffcv an FFCV file")
    val_data: str = opt("", "validation split instead of <data>/val: a folder, or for ffcv an FFCV file")
    classes: str = opt(
        "",
        "names of the label ids: a text file (one per line) or an ImageFolder split "
        "(its sorted folder names); default: the data's own classes, or the label ids",
    )
    loader: str = opt("pil", f"data backend: {', '.join(BACKENDS)}")
    batch_size: int = opt(128, "images per batch on each process")
    workers: int = opt(
        -1,
        "decoding workers per process (pil, nvjpeg: threads; dali: its threads); -1: on CUDA the CPU cores "
        "this process may use divided by the ranks on this node, on the CPU 2",
    )
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    amp: str = opt("auto", "mixed precision: auto (bf16/fp16 on CUDA, off on CPU), bf16, fp16, off")
    seed: int = opt(0, "seed of order and augmentation (per epoch)")
    skip_bad: bool = opt(False, "leave out unreadable images and empty classes (counted and reported)")
    check: str = opt("header", "image check while scanning: header (fast) or full (decode all)")
    exif_orientation: str = opt(
        "stored",
        "EXIF orientation: stored (pixels as the file stores them, as torchvision's ImageFolder) or apply "
        "(rotated and mirrored per the tag, crops planned in that frame), the same on every backend",
    )
    rescan: bool = opt(False, "scan the data folders again instead of reusing their stored index (or LOWRES_RESCAN=1)")
    out: str = opt("", "run folder (default: runs/<job>-<time>)")
    progress: bool = opt(True, "progress bars (off when not a terminal or when CI is set)")
    compile: bool = opt(False, "torch.compile the model (TorchInductor): the first step of each input size compiles")

    def __post_init__(self):
        check_positive_int("--batch-size", self.batch_size)
        if self.workers < -1:
            raise ValueError(f"--workers must be >= 0, or -1 for the default, got {self.workers}")
        if self.loader not in BACKENDS:
            raise ValueError(f"--loader must be one of {', '.join(BACKENDS)}, got {self.loader!r}")
        if self.exif_orientation not in ORIENTATIONS:
            choices = ", ".join(ORIENTATIONS)
            raise ValueError(f"--exif-orientation must be one of {choices}, got {self.exif_orientation!r}")


@dataclass
class OptimConfig(CommonConfig):
    epochs: int = opt(16, "epochs")
    lr: float = opt(0.4, "learning rate for a batch of 256 (scaled by B/256)")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-5, "weight decay (not on batch-norm and biases)")
    warmup_epochs: float = opt(1.0, "linear warm-up epochs")
    schedule: str = opt("cosine", "cosine, or step (divide by 10 every --step-every epochs)")
    step_every: int = opt(30, "epochs between divisions by 10 of the step schedule")
    label_smoothing: float = opt(0.1, "label smoothing")
    resume: bool = opt(False, "continue the run in --out from its last checkpoint")
    log: str = opt(
        "jsonl",
        "metrics log: jsonl (metrics.jsonl, always written), or tensorboard to also write "
        "<out>/tensorboard/ events (the tensorboard extra)",
    )

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--epochs", self.epochs)
        check_log(self.log)
        self.lr_schedule()  # validates lr and schedule

    def lr_schedule(self) -> LrSchedule:
        return LrSchedule(self.lr, self.epochs, self.warmup_epochs, self.schedule, self.step_every)


@dataclass
class TrainConfig(OptimConfig):
    model: str = opt("resnet_tiny", "resnet_tiny, a torchvision model (resnet18, resnet50...) or timm/<name>")
    weights: str = opt("", "local state dict to start from (nothing is downloaded)")
    train_res: int = opt(64, "train crop side K_train (start of the ramp if --final-res)")
    final_res: int = opt(0, "progressive resizing: ramp linearly to this side (0: constant)")
    ramp_epochs: str = opt("", "first,last epoch of the ramp (default: the whole run)")
    res_step: int = opt(32, "ramp and --mix-mean sizes are multiples of this")
    mix_sizes: str = opt("", "MixSize: comma-separated sizes drawn per step (with --mix-weights)")
    mix_weights: str = opt("", "MixSize: weights of --mix-sizes (default: equal)")
    mix_mean: int = opt(0, "MixSize: mean side, sizes within 2 spreads in multiples of --res-step")
    mix_spread: float = opt(16.0, "MixSize: spread (standard deviation) of the side around --mix-mean")
    mix_mode: str = opt("B+", "MixSize: B+ (batch size B0 (S0/S)^2) or D+ (B0 images, (S0/S)^2 copies)")
    mix_ref: int = opt(0, "MixSize: reference side S0 at which --batch-size is B0 (0: the largest size)")
    eval_res: int = opt(0, "validation side after each epoch (0: the last epoch's nominal train side)")
    repeated_aug: int = opt(
        1,
        "repeated augmentation: each image of an epoch this many times, in other crops "
        "and spread over ranks, on 1/k of the images so that an epoch costs the same "
        "(FixRes trains with 3)",
    )

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--train-res", self.train_res)
        check_positive_int("--repeated-aug", self.repeated_aug)
        self.size_policy()  # validates ramp and MixSize values

    def size_policy(self) -> SizePolicy:
        mix = dict(batch_size=self.batch_size, mode=self.mix_mode, ref_size=self.mix_ref, seed=self.seed)
        if self.mix_sizes:
            sizes = positive_ints(self.mix_sizes, "--mix-sizes")
            weights = parse_floats(self.mix_weights, "--mix-weights") if self.mix_weights else (1.0,) * len(sizes)
            return MixSize(sizes, weights, **mix)
        if self.mix_mean:
            return MixSize.around(self.mix_mean, self.mix_spread, self.res_step, **mix)
        if not self.final_res:
            return ConstantSize(self.train_res, self.batch_size)
        first, last = (int(v) for v in self.ramp_epochs.split(",")) if self.ramp_epochs else (0, self.epochs - 1)
        return LinearRamp(self.train_res, self.final_res, first, last, self.batch_size, self.res_step)


@dataclass
class FromCheckpoint(CommonConfig):
    """Jobs that start from a trained model at one or more test sides: a checkpoint of ours, or
    a state dict the user brings (a torchvision or timm model's) whose classes are the data's."""

    checkpoint: str = opt("", "checkpoint file or run folder to start from (or --model with --weights)")
    model: str = opt("", "without --checkpoint: the model of --weights (e.g. resnet50, timm/<name>)")
    weights: str = opt(
        "",
        "without --checkpoint: a local state dict of --model whose classifier has one "
        "output per class folder of the data (e.g. torchvision's ResNet-50 file on ImageNet)",
    )
    train_res: int = opt(224, "with --weights: the side K_train the weights were trained at")
    test_res: str = opt(
        "auto",
        "test side(s): comma-separated, or auto (the FixRes apparent-size rule "
        "for one side; 0.75x-2x K_train for a sweep)",
    )

    def __post_init__(self):
        super().__post_init__()
        if bool(self.checkpoint) == bool(self.weights):
            raise ValueError("give either --checkpoint, or --model with --weights")
        if self.weights and not self.model:
            raise ValueError("--weights needs --model (the architecture the state dict belongs to)")
        check_positive_int("--train-res", self.train_res)
        parse_resolutions(self.test_res, 64)

    @property
    def source(self) -> str:
        return self.checkpoint or self.weights


@dataclass
class FinetuneConfig(OptimConfig, FromCheckpoint):
    epochs: int = opt(3, "fine-tuning epochs")
    lr: float = opt(0.05, "learning rate for a batch of 256 (head only)")
    warmup_epochs: float = opt(0.0, "linear warm-up epochs")
    label_smoothing: float = opt(0.0, "label smoothing (FixEfficientNet uses 0.1)")
    augment: str = opt(
        "test",
        "fine-tuning augmentation (FixRes section 5): test (resize + centre crop), "
        "test2 (centre crop shifted horizontally, flip, colour jitter), train "
        "(RandomResizedCrop + flip)",
    )

    def __post_init__(self):
        super().__post_init__()
        check_augment("--augment", self.augment)


@dataclass
class SweepConfig(FromCheckpoint):
    recalibrate_bn: int = opt(
        0,
        "before each test side, re-estimate BN statistics from this many "
        "training batches at that side (0: no recalibration)",
    )
    parametric: int = opt(
        0,
        "parametric adaptation: fit Fréchet laws to the pooled activations of this many "
        "training batches (test-time augmentation) at K_train and at each side, and map "
        "the pooled values from the one to the other before the classifier (0: off)",
    )

    def __post_init__(self):
        super().__post_init__()
        check_count("--recalibrate-bn", self.recalibrate_bn)
        check_count("--parametric", self.parametric)


@dataclass
class ActivationsConfig(FromCheckpoint):
    compare: str = opt("", "a second checkpoint measured the same way (e.g. the source of a fine-tuned one)")
    batches: int = opt(0, "validation batches per side (0: the whole validation set)")

    def __post_init__(self):
        super().__post_init__()
        check_count("--batches", self.batches)


@dataclass
class RecalibrateConfig(FromCheckpoint):
    batches: int = opt(50, "training batches (test-time augmentation, no gradient) to estimate from")

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("--batches", self.batches)


@dataclass
class FixResConfig(TrainConfig):
    sweep_res: str = opt("auto", "test sides to sweep before and after fine-tuning, or auto")
    finetune_res: str = opt(
        "auto",
        "K_test to fine-tune at: a side, auto (apparent-size rule) or best (best of the first sweep above K_train)",
    )
    finetune_epochs: int = opt(3, "fine-tuning epochs")
    finetune_lr: float = opt(0.05, "fine-tuning learning rate for a batch of 256")
    parametric: int = opt(
        8,
        "training batches per side to fit the parametric adaptation of the trained "
        "model, swept beside plain testing (0: no parametric column)",
    )
    finetune_augment: str = opt("test", "fine-tuning augmentation: test, test2 or train (see finetune --help)")

    def __post_init__(self):
        super().__post_init__()
        check_count("--parametric", self.parametric)
        check_augment("--finetune-augment", self.finetune_augment)
        parse_resolutions(self.sweep_res, self.train_res)
        if self.finetune_res not in ("auto", "best"):
            parse_resolutions(self.finetune_res, self.train_res)


def check_augment(option: str, name: str) -> None:
    if name not in FINETUNE_AUGMENTATIONS:
        raise ValueError(f"{option} must be one of {', '.join(FINETUNE_AUGMENTATIONS)}, got {name!r}")


def parse_resolutions(text: str, train_res: int) -> list[int]:
    if text == "auto":
        return sweep_resolutions(train_res)
    return list(positive_ints(text, "test resolutions"))
