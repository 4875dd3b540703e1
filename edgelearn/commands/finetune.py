"""`edgelearn finetune model.onnx --data train.npz --trainable "fc*" --epochs 3 -o tuned.onnx`."""
from __future__ import annotations

import os

from inference.errors import InputError

NAME = "finetune"
HELP = "fine-tune an ONNX model on an .npz of features x and labels y, write the tuned ONNX"

_LOSSES = {"cross_entropy": "CrossEntropyLoss", "mse": "MSELoss", "bce": "BCEWithLogitsLoss", "l1": "L1Loss",
           "huber": "HuberLoss"}
_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad"}


def add_arguments(p) -> None:
    p.add_argument("model")
    p.add_argument("--data", required=True, help=".npz with arrays x (features) and y (labels/targets)")
    p.add_argument("--x-key", default="x")
    p.add_argument("--y-key", default="y")
    p.add_argument("--trainable", action="append", default=None, metavar="GLOB",
                   help="parameters to train, glob over initializer names (repeatable; default: all)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=sorted(_LOSSES), default="cross_entropy")
    p.add_argument("--optimizer", choices=sorted(_OPTIMIZERS), default="adam")
    p.add_argument("--val-split", type=float, default=0.0, help="fraction of the data held out for validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="checkpoint file written each epoch; resumed from if it exists")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("-o", "--output", required=True, help="where to write the tuned ONNX model")


def run(args) -> int:
    import training as T
    from training.data import load_npz, train_test_split

    if not os.path.exists(args.data):
        raise InputError(f"--data {args.data!r} does not exist")
    x, y = load_npz(args.data, args.x_key, args.y_key)
    validation = None
    if args.val_split > 0:
        x, xv, y, yv = train_test_split(x, y, args.val_split, seed=args.seed, stratify=args.loss == "cross_entropy")
        validation = (xv, yv)
    model = T.load(args.model)
    loss = getattr(T, _LOSSES[args.loss])()
    optimizer = getattr(T, _OPTIMIZERS[args.optimizer])(lr=args.lr)
    trainer = T.Trainer(model, loss=loss, optimizer=optimizer, trainable=args.trainable, seed=args.seed)
    if args.checkpoint and os.path.exists(args.checkpoint):
        trainer.load_checkpoint(args.checkpoint)
        print(f"resumed from {args.checkpoint} at epoch {trainer.epoch}, step {trainer.step}")
    print(f"training {len(trainer.graph.params)} parameter tensors: {', '.join(trainer.graph.params[:8])}"
          + (" ..." if len(trainer.graph.params) > 8 else ""))
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation=validation,
                          progress=args.progress, checkpoint=args.checkpoint)
    for e in range(len(history.get("loss", []))):
        print(f"epoch {e + 1}: " + "  ".join(f"{k}={v[e]:.4f}" for k, v in history.items()))
    trainer.export(args.output)
    print(f"wrote {args.output}")
    return 0
