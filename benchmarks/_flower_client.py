"""The ClientApp side shared by the Flower benchmark children (_flower_digits.py,
_flower_scaling.py; Flower's venv): local SGD and accuracy, each as the reply FedAvg expects."""

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict


def fit(msg: Message, model: torch.nn.Module, xtr: np.ndarray, ytr: np.ndarray,
        epochs: int, batch: int, lr: float) -> Message:
    """`model` loaded with the message's arrays, trained by SGD (cross-entropy, shuffled
    batches); the reply: its arrays and the training rows."""
    torch.set_num_threads(1)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.from_numpy(xtr), torch.from_numpy(ytr.astype(np.int64))
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                          "metrics": MetricRecord({"num-examples": len(y)})})
    return Message(content=content, reply_to=msg)


def score(msg: Message, model: torch.nn.Module, xte: np.ndarray, yte: np.ndarray) -> Message:
    """The accuracy of the message's arrays on the test rows; the reply with the test rows."""
    torch.set_num_threads(1)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    content = RecordDict({"metrics": MetricRecord({"accuracy": acc, "num-examples": len(yte)})})
    return Message(content=content, reply_to=msg)
