"""``genq export``: pairs for another tool."""

from __future__ import annotations

import click

from genq.cli.common import say, user_errors


@click.command("export")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("--format", "format_", required=True,
              type=click.Choice(["beir", "dpr", "flag", "simpletransformers", "hf"]))
@click.option("-o", "--output", required=True, type=click.Path(), help="File or folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --output once the new one is complete.")
@user_errors
def export_command(pairs, format_, output, overwrite):
    """Write PAIRS for another tool: BEIR, DPR/Haystack, FlagEmbedding, simpletransformers, HF datasets."""
    from genq.exports import export_pairs

    result = export_pairs(pairs, format_, output, overwrite=overwrite)
    say(" ".join(f"{k}={v}" for k, v in result.items()))
