"""The ClientApp side shared by the Flower benchmark children (_flower_digits.py,
_flower_scaling.py; Flower's venv): local SGD and accuracy, each as the reply FedAvg expects."""

import numpy as np
import torch
from digits_task import accuracy, local_sgd
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict


def fit(msg: Message, model: torch.nn.Module, xtr: np.ndarray, ytr: np.ndarray,
        epochs: int, batch: int, lr: float) -> Message:
    """`model` loaded with the message's arrays, trained by SGD (cross-entropy, shuffled
    batches); the reply: its arrays and the training rows."""
    torch.set_num_threads(1)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    local_sgd(model, xtr, ytr, epochs, batch, lr)
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"num-examples": len(ytr)})})
    return Message(content=content, reply_to=msg)


def score(msg: Message, model: torch.nn.Module, xte: np.ndarray, yte: np.ndarray) -> Message:
    """The accuracy of the message's arrays on the test rows; the reply with the test rows."""
    torch.set_num_threads(1)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    content = RecordDict({"metrics": MetricRecord({"accuracy": accuracy(model, xte, yte),
                                                   "num-examples": len(yte)})})
    return Message(content=content, reply_to=msg)
