"""How much class information VGG16's frozen features carry, per weights source.

A linear probe: scikit-learn's multinomial logistic regression on the standardised
features of the frozen VGG16 base (the series' ``vgg16`` network, cifarlab.models, at the
profile's image size), fitted on a stratified subset of the training split and scored on
one of the validation split, for each ``--weights`` source, beside the same probe on the
raw pixels. The test split is never read. Issue 15 asked whether vgg16 fails to beat the
baseline on CIFAR-100 because the offline weights (HED's edge detector) carry little
class information: this compares them with random weights (``none``) and, where they can
be downloaded, ImageNet's.

    CIFARLAB_DATA_DIR=../shared/data python benchmarks/vgg16_probe.py \
        --weights offline none --layers block5_pool block4_pool --train 10000 --val 2500

Prints a markdown table (probe accuracy per weights source and layer, seconds) and the
evidence (dataset checksum, sizes, image size, seed, backend, versions, machine).
"""

from __future__ import annotations

import argparse
import sys
import time


def probe(x_train, y_train, x_val, y_val, seed: int) -> float:
    """Validation accuracy of a logistic regression fitted on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flat = lambda a: a.reshape(len(a), -1).astype("float32")  # noqa: E731
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.01, max_iter=300, random_state=seed)
    )
    clf.fit(flat(x_train), y_train)
    return float((clf.predict(flat(x_val)) == y_val).mean())


def run(dataset, weights, layers, n_train, n_val, image_size, seed, profile="cpu"):
    """The table's rows: one per weights source and layer, and one for the raw pixels."""
    import keras

    from cifarlab.config import model_config
    from cifarlab.data.datasets import prepare, stratified_subset
    from cifarlab.errors import CifarlabError
    from cifarlab.models.vgg16 import build_vgg16

    cfg = model_config("vgg16", profile)
    cfg = cfg.replace(
        network={**cfg.network, "image_size": image_size or cfg.network["image_size"]}
    )
    ds, split, cfg = prepare(dataset, cfg, seed, progress=False)
    xt, yt = stratified_subset(split.x_train, split.y_train, n_train, seed)
    xv, yv = stratified_subset(split.x_val, split.y_val, n_val, seed)
    t = time.time()
    rows = [dict(weights="raw pixels", layer="input", accuracy=probe(xt, yt, xv, yv, seed),
                 seconds=round(time.time() - t, 1))]  # fmt: skip
    for source in weights:
        keras.utils.set_random_seed(seed)  # "none": the same random weights every run
        model = build_vgg16(cfg, source)
        missing = [name for name in layers if name not in {ly.name for ly in model.layers}]
        if missing:
            raise CifarlabError(f"VGG16 has no layer {', '.join(missing)}")
        outs = [model.get_layer(name).output for name in layers]
        features = keras.Model(model.inputs, outs)
        t = time.time()
        ft = features.predict(xt, batch_size=250, verbose=0)
        fv = features.predict(xv, batch_size=250, verbose=0)
        seconds = time.time() - t
        ft, fv = (ft, fv) if len(layers) > 1 else ([ft], [fv])
        for name, a, b in zip(layers, ft, fv):
            t = time.time()
            acc = probe(a, yt, b, yv, seed)
            rows.append(dict(weights=model.weights_source, layer=f"{name} {a.shape[1:]}",
                             accuracy=acc, seconds=round(seconds + time.time() - t, 1)))  # fmt: skip
    return ds, cfg, rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cifar100")
    p.add_argument("--weights", nargs="+", default=["offline", "none"],
                   help="imagenet, offline, none or .h5 paths (as --vgg16-weights)")  # fmt: skip
    p.add_argument("--layers", nargs="+", default=["block5_pool"])
    p.add_argument("--train", type=int, default=10_000, help="training images of the probe")
    p.add_argument("--val", type=int, default=2_500, help="validation images it is scored on")
    p.add_argument("--image-size", type=int, default=None, help="default: the cpu profile's")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    from cifarlab.errors import CifarlabError
    from cifarlab.training.evidence import environment

    try:
        ds, cfg, rows = run(a.dataset, a.weights, a.layers, a.train, a.val, a.image_size, a.seed)
    except CifarlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| weights | layer (feature shape) | probe accuracy (val) | seconds |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['weights']} | {r['layer']} | {r['accuracy']:.2%} | {r['seconds']} |")
    env = environment()
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    hw = env["hardware"]
    print(f"\n{ds.name} ({ds.checksum[:16]}), {a.train:,} train / {a.val:,} val images of the "
          f"seed-{a.seed} split, image size {cfg.network['image_size']}; backend {env['backend']}; "
          f"{versions}; {hw['processor']}, {hw['cpu_count']} cores")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
