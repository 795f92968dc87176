"""Which of a training seed's draws set an E2E run's quality: one ``train`` job with them apart.

``train.seed`` sets every draw of a run at once: the batch order and neighbour sampling (the
batch plan's seed) and torch's global generator, which draws the model's initial weights and,
once training runs, dropout masks and GFAE masks. This script runs ``python -m torchrec_gnn
train`` in process with ``train.seed = --order-seed`` but torch's generator seeded with
``--init-seed`` before the model is built and re-seeded with ``--draw-seed`` after it (before the
optimizers, i.e. before the first step), so the three can be swapped between seeds. With
``--table-init-seed``, torch's generator is re-seeded again between the two parts of the init:
the dense modules (GNN, MLPs, heads) are initialised when the model is built, from
``--init-seed``, and the embedding tables (the ranker's and the node tables, built on the meta
device) when ``DistributedModelParallel`` shards them, from ``--table-init-seed``:

    python docs/results/seed_draws.py --order-seed 0 --init-seed 4 --draw-seed 0 --output-dir runs/draws_o0_i4_d0
    python docs/results/seed_draws.py --order-seed 0 --init-seed 4 --table-init-seed 0 --draw-seed 0 --output-dir ...

With ``--ranker-init-seed`` the dense part is split too: the GNN tower's modules (built first)
come from ``--init-seed`` and the ranker's (dense and over arches, fusion, heads) from
``--ranker-init-seed``.

A diagnostic, not a recipe: it patches ``torch.manual_seed`` for the job's one call
(``RankerRecipe.setup``) and wraps ``RankerRecipe._setup_optimizer``, the recipe's
``shard_model`` and the builder's ``build_graph_tower``.
"""

import argparse
import sys

import torch

from torchrec_gnn import cli
from torchrec_gnn.models import builder
from torchrec_gnn.recipes import ranker
from torchrec_gnn.recipes.ranker import RankerRecipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--order-seed", type=int, required=True, help="train.seed: batch order, neighbour sampling")
    parser.add_argument("--init-seed", type=int, required=True, help="torch's generator while the model is built")
    parser.add_argument("--draw-seed", type=int, required=True, help="torch's generator from the first step on")
    parser.add_argument("--table-init-seed", type=int, default=None,
                        help="torch's generator for the embedding tables' init (default: the stream goes on from --init-seed)")
    parser.add_argument("--ranker-init-seed", type=int, default=None,
                        help="torch's generator for the ranker's dense modules (default: the stream goes on)")
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()

    seed_everything = torch.manual_seed
    torch.manual_seed = lambda seed: seed_everything(args.init_seed if seed == args.order_seed else seed)
    setup_optimizer = RankerRecipe._setup_optimizer

    def reseed_then_setup_optimizer(recipe: RankerRecipe) -> None:
        seed_everything(args.draw_seed)
        setup_optimizer(recipe)

    RankerRecipe._setup_optimizer = reseed_then_setup_optimizer
    if args.table_init_seed is not None:
        shard_model = ranker.shard_model

        def reseed_then_shard_model(*shard_args, **shard_kwargs):
            seed_everything(args.table_init_seed)
            return shard_model(*shard_args, **shard_kwargs)

        ranker.shard_model = reseed_then_shard_model
    if args.ranker_init_seed is not None:
        build_graph_tower = builder.build_graph_tower

        def build_tower_then_reseed(*build_args, **build_kwargs):
            tower = build_graph_tower(*build_args, **build_kwargs)
            seed_everything(args.ranker_init_seed)
            return tower

        builder.build_graph_tower = build_tower_then_reseed
    sys.argv = ["torchrec_gnn", "train", "--config", args.config, "--seed", str(args.order_seed),
                "--output-dir", args.output_dir, "--set", "train.plots=false"]
    cli.main()


if __name__ == "__main__":
    main()
