"""The ``genq`` command line, one module per stage group; each command parses its options and calls one API function.

A stage's option groups live beside its command (``generation_options`` in ``generate.py``,
``training_options`` in ``train.py``, ...), each with the function that turns the parsed values into
that stage's config; ``adapt.py`` collects the groups, so an option added to a group reaches
``adapt`` with no second edit. ``common.py`` holds what no single stage owns.
"""

from genq.cli.adapt import adapt
from genq.cli.corpus import corpus, corpus_prepare, corpus_stats_command
from genq.cli.crop import crop
from genq.cli.evaluate import evaluate
from genq.cli.export import export_command
from genq.cli.generate import generate
from genq.cli.index import index
from genq.cli.pairs import filter_command, mine_negatives_command, pseudo_label_command
from genq.cli.root import main
from genq.cli.search import search, serve
from genq.cli.train import train, train_reranker_command
from genq.cli.train_generator import train_generator_command

for command in (corpus, generate, crop, filter_command, mine_negatives_command, pseudo_label_command, train,
                train_reranker_command, train_generator_command, index, search, serve, evaluate, export_command, adapt):
    main.add_command(command)

__all__ = ["adapt", "corpus", "crop", "corpus_prepare", "corpus_stats_command", "evaluate", "export_command",
           "filter_command", "generate", "index", "main", "mine_negatives_command", "pseudo_label_command", "search",
           "serve", "train", "train_generator_command", "train_reranker_command"]
