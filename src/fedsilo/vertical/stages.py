"""The stages of a deployed vertical run, in order (the server names them in its tasks; each
institution answers them in `fedsilo.client.vertical_party`):

open       every party: check the run against its policy, advertise its signed channel key
peers      every party: check the others' keys; the label holder (the PSI hub) sends each peer
           the salt and its blinded IDs, sealed
respond    each feature holder: its PSI response, sealed to the hub
align      the hub: the shared rows; each peer's positions, sealed
rows       each feature holder: its shared rows; now every party has them in one order
hlr.*      Hetero-LR, per mini-batch: forward (feature holders), residual (label holder, with
           its own masked gradient), gradient (feature holders); finish applies the last step
split.*    split learning, per mini-batch: forward (feature holders), step (label holder);
           finish applies the last gradients
predict    each feature holder: its part of the held-out rows' prediction, sealed
evaluate   the label holder: the vertical model's and its own model's test metrics
"""

from __future__ import annotations

PREFIX = "vertical."
OPEN, PEERS, RESPOND, ALIGN, ROWS = (PREFIX + s for s in ("open", "peers", "respond", "align",
                                                           "rows"))
HLR_FORWARD, HLR_RESIDUAL, HLR_GRADIENT, HLR_FINISH = (
    PREFIX + "hlr." + s for s in ("forward", "residual", "gradient", "finish"))
SPLIT_FORWARD, SPLIT_STEP, SPLIT_FINISH = (PREFIX + "split." + s
                                           for s in ("forward", "step", "finish"))
PREDICT, EVALUATE = PREFIX + "predict", PREFIX + "evaluate"
REFERENCES = ("label holder alone", "vertical")  # what a deployment's evaluation reports
