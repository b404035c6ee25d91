"""Named training presets as data: the tutorial's six networks, each a typed frozen config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ConvLayer:
    """One Conv2D, then optionally MaxPooling2D, BatchNormalization and Dropout, in that order.

    A residual layer is BatchNormalization, then x + activation(Conv2D(x)) with "same" padding and as
    many filters as its input has channels (trainer/model.py), then the same optional layers.
    """

    filters: int
    kernel_size: int
    pool_size: int = 0  # 0: no pooling after this convolution
    padding: str = "valid"
    strides: int = 1
    batch_norm: bool = False  # after the activation (and pooling), as in Deotte's Keras MNIST nets
    dropout: float = 0.0  # rate of a Dropout closing this block; 0: no layer
    pool_padding: str = "valid"  # "same" rounds an odd size up (7 -> 4), as PyTorch's ceil_mode does
    residual: bool = False


# Whose defaults the network's layers take (ModelConfig.layer_defaults): Keras' (batch norm momentum 0.99 and
# epsilon 1e-3, Glorot-uniform kernels, zero biases) or PyTorch's (a running average that keeps 0.9 of
# itself per batch, epsilon 1e-5, kernels and biases uniform in +-1/sqrt(fan_in)), for recipes written in
# PyTorch such as `resnet`'s (trainer/model.py).
LAYER_DEFAULTS = ("keras", "pytorch")
# T. Doucet's crops as his Augmentor pipeline and Pillow make them (trainer/crop_zoom.py): training on a 25x25
# window at a random whole-pixel offset, serving the centre 24x24, both resized bicubically to 28x28.
AUGMENTOR_CROPS = {"centre_crop": 24, "train_crop": 25, "crop_interpolation": "bicubic"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: input steps, convolutions, Flatten or global pooling, Dropout, dense, softmax."""

    conv_layers: tuple[ConvLayer, ...]
    dense_units: tuple[int, ...]
    dropout: float = 0.0  # rate of the Dropout between Flatten and the dense layers; 0: no layer
    activation: str = "relu"
    dense_batch_norm: bool = False  # BatchNormalization after each hidden dense layer
    mirror_average: bool | None = None  # serve the mean softmax of image and mirror; None: the dataset's
    # default (trainer/tta.py)
    centre_crop: int = 0  # > 0: crop the central N x N pixels and resize them back to 28 x 28, in training
    # and serving alike (a fixed zoom); 0: the image as it is
    train_crop: int = 0  # > 0 (with centre_crop): in training, an N x N window at a random whole-pixel offset
    # instead of the centre one, as Augmentor crops (trainer/crop_zoom.py); 0: the centre crop throughout
    crop_interpolation: str = "bilinear"  # how a cropped window is resized to 28 x 28 ("bicubic": as Pillow)
    trim_border: int = 0  # > 0: drop this many pixels from each side of the input (a plain crop, no zoom
    # back), in training and serving alike: MNIST fitted each digit into a 20 x 20 box near the centre, so
    # the convolutions skip border positions that are almost always blank; 0: the whole image
    standardize: bool = False  # per-image standardisation (zero mean, unit deviation) before the first conv
    global_pool: bool = False  # global average pooling instead of Flatten before the head
    layer_defaults: str = "keras"  # "pytorch": batch norm with PyTorch's momentum 0.1 and epsilon 1e-5, and
    # PyTorch's default initialisation of convolutions and dense layers (LAYER_DEFAULTS above)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule."""

    epochs: int
    batch_size: int
    optimizer: str = "rmsprop"
    learning_rate: float = 0.001
    val_size: int = 5_000  # stratified hold-out from the 60k training images, for epoch selection
    seed: int = 42
    schedule: str = "constant"  # learning rate: constant | onecycle (warm-up then cosine) | exponential
    # | exponential-anneal (trainer/schedules.py)
    lr_decay: float = 0.95  # per-epoch factor of the exponential schedules
    beta_2: float = 0.999  # Adam's (and AdamW's) second-moment decay
    weight_decay: float = 0.0  # decoupled (AdamW); 0 with optimizer adamw is plain Adam
    label_smoothing: float = 0.0
    augment: float = 0.0  # strength of the dataset's training-only augmentation (trainer/augment.py); 0: none
    augment_policy: str = ""  # "": the dataset's own augmentation; else a named one (trainer/augment.py)
    clean_epochs: int = 0  # the last this many epochs train on the images as they are, augmentation off
    elastic: float = 0.0  # alpha of the elastic distortion added to that augmentation (34: Simard's); 0: none
    elastic_probability: float = 1.0  # share of the training images that get the elastic distortion
    weight_average: float = 0.0  # decay of the weights' EMA that is validated and exported; 0: none
    members: int = 1  # > 1: an ensemble of this many seeds averaged inside one graph (trainer/ensemble.py)
    precision: str = "float32"  # float32 | bfloat16 (mixed, training only; trainer/precision.py) | auto


@dataclass(frozen=True)
class Preset:
    """A named, reproducible recipe: what to build and how to train it."""

    name: str
    description: str
    model: ModelConfig
    train: TrainConfig
    tutorial_test_accuracy: float | None = None  # last-epoch figure the tutorial printed, if any
    tags: tuple[str, ...] = field(default=())

    def with_overrides(self, **train_overrides: Any) -> Preset:
        """A copy with some TrainConfig fields replaced (None values are ignored)."""
        changes = {key: value for key, value in train_overrides.items() if value is not None}
        return replace(self, train=replace(self.train, **changes)) if changes else self

    def with_model(self, **model_changes: Any) -> Preset:
        """A copy with some ModelConfig fields replaced."""
        return replace(self, model=replace(self.model, **model_changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, written into model cards and reports."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """The inverse of to_dict (as read back from a model card's JSON, lists for tuples)."""
        model = data["model"]
        return cls(
            name=data["name"],
            description=data["description"],
            model=ModelConfig(
                **{**model, "conv_layers": tuple(ConvLayer(**layer) for layer in model["conv_layers"]),
                   "dense_units": tuple(model["dense_units"])}
            ),
            train=TrainConfig(**data["train"]),
            tutorial_test_accuracy=data.get("tutorial_test_accuracy"),
            tags=tuple(data.get("tags", ())),
        )


_ONE_CONV = (ConvLayer(10, 4),)
_TUTORIAL_TRAIN = TrainConfig(epochs=10, batch_size=50)


def _seed(name: str, description: str, model: ModelConfig, accuracy: float, **train: Any) -> Preset:
    return Preset(
        name=name,
        description=description,
        model=model,
        train=replace(_TUTORIAL_TRAIN, **train),
        tutorial_test_accuracy=accuracy,
        tags=("seed",),
    )


# The tutorial's progression (../shared/seed/), layer for layer; accuracy = its last-epoch test figure.
SEED_PRESETS = (
    _seed("seed-baseline", "Conv(10,4x4) -> Dense(100); no regularisation",
          ModelConfig(_ONE_CONV, (100,)), 0.9829),
    _seed("seed-dropout", "seed-baseline with Dropout(0.5) before the dense layer",
          ModelConfig(_ONE_CONV, (100,), dropout=0.5), 0.9864),
    _seed("seed-dense200", "seed-dropout with 200 hidden units",
          ModelConfig(_ONE_CONV, (200,), dropout=0.5), 0.9855),
    _seed("seed-dense50", "seed-dropout with 50 hidden units",
          ModelConfig(_ONE_CONV, (50,), dropout=0.5), 0.9852),
    _seed("seed-2conv", "two stacked convolutions: Conv(10,4) -> MaxPool(2) -> Conv(20,4)",
          ModelConfig((ConvLayer(10, 4, pool_size=2), ConvLayer(20, 4)), (100,), dropout=0.5), 0.9907),
    _seed("seed-best", "the tutorial's best: Conv(16,4)-Pool-Conv(32,4)-Pool, Dropout(0.4), batch 200",
          ModelConfig((ConvLayer(16, 4, pool_size=2), ConvLayer(32, 4, pool_size=2)), (100,), dropout=0.4),
          0.9938, batch_size=200, epochs=40),
)

# Beyond the tutorial (issue 6): recipes chosen on the validation split; numbers in docs/results.md.
_DEOTTE_NET = ModelConfig(
    # Deotte's Keras MNIST net: 3x3, 3x3, learnable 5x5/2 "pooling", twice; a 4x4 conv as the dense layer.
    conv_layers=(
        ConvLayer(32, 3, batch_norm=True),
        ConvLayer(32, 3, batch_norm=True),
        ConvLayer(32, 5, strides=2, padding="same", batch_norm=True, dropout=0.4),
        ConvLayer(64, 3, batch_norm=True),
        ConvLayer(64, 3, batch_norm=True),
        ConvLayer(64, 5, strides=2, padding="same", batch_norm=True, dropout=0.4),
        ConvLayer(128, 4, batch_norm=True),
    ),
    dense_units=(),
    dropout=0.4,
)
# Deotte trains 30-45 epochs at batch 64 with 1e-3 * 0.95^epoch; a one-cycle rate at batch 128 anneals
# fully at any --epochs, so a shortened run is still a finished recipe (and batch 128 is kinder to a CPU).
# The last sixth trains on the digits as they are: validation chose it (docs/results.md, "A clean finish").
_BEST_TRAIN = TrainConfig(
    epochs=30, batch_size=128, optimizer="adam", learning_rate=2e-3, schedule="onecycle", augment=1.0,
    clean_epochs=5,
)
# Byerly, Kalganova and Dear's M5 ("No routing needed between capsules", 2021): five unpadded 5x5
# convolutions widening from 32 to 160 filters, each with batch norm, no pooling; the 8x8x160 map feeds
# the softmax directly. Tried as another family for ensembles: it errs on the same digits as Deotte's
# net, and weaker (docs/results.md, "Members of another family").
_M5_NET = ModelConfig(
    conv_layers=tuple(ConvLayer(filters, 5, batch_norm=True) for filters in (32, 64, 96, 128, 160)),
    dense_units=(),
)
# T. Doucet's residual network (github.com/ttdoucet/mnist): 128 to 512 filters, a residual 3x3 block at each
# scale, global average pooling; 4,736,522 parameters. His recipe: each image standardised, a random 25x25
# crop resized to 28 (here a fixed centre crop in the network and a random shift before it;
# `--augmentor-crops` crops his way, AUGMENTOR_CROPS, and is recommended: 8 fewer test errors in 10,000 over
# three seeds, docs/results.md, "A third seed of Augmentor's crops"), a 4x4-grid distortion of 1 px and a
# 10-degree rotation; Adam (beta_2 0.99) at batch 100, the rate falling tenfold over 10 epochs, then one epoch
# annealing it to a thousandth. He reports 99.71-99.77% for single networks and 99.79% for committees of five,
# each scored once after its last epoch; here it scored 99.56% and 99.59% with Keras' layer defaults and
# 99.55% with PyTorch's, under `best` (docs/results.md, "Doucet's residual network").
_RESNET_NET = ModelConfig(
    conv_layers=(
        ConvLayer(128, 5, padding="same"),
        ConvLayer(128, 3, residual=True, pool_size=2),
        ConvLayer(128, 3, residual=True, batch_norm=True),
        ConvLayer(256, 3, padding="same", pool_size=2),
        ConvLayer(256, 3, residual=True, batch_norm=True),
        ConvLayer(512, 3, padding="same", pool_size=2, pool_padding="same"),
        ConvLayer(512, 3, residual=True, batch_norm=True),
    ),
    dense_units=(),
    centre_crop=25,
    standardize=True,
    global_pool=True,
    # PyTorch's batch norm and initialisation, as his run had them: validation chose them by one image of
    # 5,000 (99.44% against 99.42%, seed 42); test 45 errors against 44 (docs/results.md, "`resnet` with
    # PyTorch's layer defaults").
    layer_defaults="pytorch",
)
_RESNET_TRAIN = TrainConfig(
    epochs=11, batch_size=100, optimizer="adam", learning_rate=4e-4, schedule="exponential-anneal",
    lr_decay=0.1 ** (1 / 10), beta_2=0.99, augment=1.0, augment_policy="shift-rotate-grid",
)
MODERN_PRESETS = (
    Preset(
        name="fast",
        description="best accuracy per CPU second, found by `digits-train tune` and refined on the "
        "validation split: seed-best's layout with 8/80 filters and batch norm on the central 26x26 pixels, "
        "RMSprop on a one-cycle rate, label smoothing, batch 200, no augmentation, 3 epochs",
        model=ModelConfig(
            (ConvLayer(8, 4, pool_size=2, batch_norm=True), ConvLayer(80, 4, pool_size=2, batch_norm=True)),
            (200,),
            dense_batch_norm=True,
            # The trimmed border and 3 epochs instead of 4 saved a third of the old `fast`'s CPU seconds at
            # equal validation accuracy (docs/results.md, "A trimmed `fast` for three epochs?").
            trim_border=1,
        ),
        train=TrainConfig(
            # Batch 200 and no augmentation: a third of the batch-50 epoch time with augmentation, at
            # equal validation accuracy (docs/results.md, "How fast was chosen").
            epochs=3, batch_size=200, optimizer="rmsprop", learning_rate=0.02, schedule="onecycle",
            label_smoothing=0.05,
            # float32: bfloat16 saved a fifth of the CPU seconds at equal validation accuracy, but scored
            # 99.37% on seeds 42-44 (docs/results.md, "`fast` in bfloat16?"); `--precision auto` offers it.
        ),
        tags=("modern",),
    ),
    Preset(
        name="best",
        description="Deotte's batch-norm CNN with training-only augmentation, off for the last 5 of its 30 "
        "epochs (a clean finish), and a one-cycle rate; also the recipe for Fashion-MNIST (--dataset "
        "fashion_mnist), where the augmentation is a left-right flip to the end",
        model=_DEOTTE_NET,
        train=_BEST_TRAIN,
        tags=("modern",),
    ),
    Preset(
        name="m5",
        description="Byerly et al.'s M5 (five unpadded 5x5 convolutions, 32..160 filters, batch norm, no "
        "pooling) trained with best's recipe unchanged: 99.62% on a GPU, about 65 min on 2 CPU cores; "
        "measured as another family for ensembles",
        model=_M5_NET,
        train=_BEST_TRAIN,
        tags=("modern",),
    ),
    Preset(
        name="resnet",
        description="T. Doucet's residual network (128-512 filters, 4.7M parameters) with his recipe: "
        "standardised images zoomed to their central 25x25, shift, rotation and grid distortion, Adam "
        "for 11 epochs at batch 100, PyTorch's layer defaults: 99.55-99.59% on 3 CPU runs (59-104 min each), "
        "under best",
        model=_RESNET_NET,
        train=_RESNET_TRAIN,
        tags=("modern",),
    ),
    Preset(
        name="ensemble",
        description="six `best` members (seeds 42..47, each with its own validation split) averaged "
        "inside one exported graph; --members N for another count",
        model=_DEOTTE_NET,
        train=replace(_BEST_TRAIN, members=6),
        tags=("modern", "ensemble"),
    ),
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (*SEED_PRESETS, *MODERN_PRESETS)}
"""Registry of every preset by name; add a preset by adding an entry."""


def get_preset(name: str) -> Preset:
    """The preset called `name`, or a KeyError listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
