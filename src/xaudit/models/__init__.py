"""Models: the Classifier type, the families table, weights and checkpoints loaded safely."""

from .checkpoints import read_state_dict, save_model_folder
from .classifier import Classifier
from .families import FAMILIES, Anatomy, Family, describe
from .trainable import configure_trainable, count_params, set_train_mode
from .weights import (
    OFFLINE_WEIGHTS,
    _packaged_file,
    build_torchvision,
    check_model_name,
    classification_models,
    install_offline_weights,
    offline_weights_hint,
    verify_checkpoint,
    weights_enum,
)

__all__ = [
    "FAMILIES",
    "OFFLINE_WEIGHTS",
    "Anatomy",
    "Classifier",
    "Family",
    "_packaged_file",
    "build_torchvision",
    "check_model_name",
    "classification_models",
    "configure_trainable",
    "count_params",
    "describe",
    "install_offline_weights",
    "offline_weights_hint",
    "read_state_dict",
    "save_model_folder",
    "set_train_mode",
    "verify_checkpoint",
    "weights_enum",
]
