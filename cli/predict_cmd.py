"""``fedmm predict``: a trained client's deployed model on new cases (a manifest, or an image and/or a report)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedmm.cli.errors import print_error, usage_errors
from fedmm.engines.predict import load_predictor
from fedmm.engines.predict_cases import output_format, predict_cases, read_manifest_cases, single_case, \
    write_predictions

MAX_SKIPPED_SHOWN = 20


def _table(preds, predictor, show: int) -> Table:
    with_labels = "label" in preds.columns
    table = Table(title=f"{predictor.client} ({predictor.view} model): {len(preds.rows)} prediction(s)")
    for col in ("id", "predicted", "p", "modalities", "surrogate", *(["label"] if with_labels else [])):
        table.add_column(col)
    for row in preds.rows[:show]:
        labels = row["predicted_label"].split("|") if row["predicted_label"] else []
        p = max((row[f"p_{c}"] for c in labels), default=max(row[f"p_{c}"] for c in predictor.classes))
        table.add_row(escape(row["id"]), row["predicted_label"] or "-", f"{p:.3f}", row["modalities"],
                      "yes" if row["surrogate"] else "no", *([escape(row["label"])] if with_labels else []))
    return table


def predict(
    model: Annotated[Path, typer.Argument(
        help="A run directory (made by 'fedmm run'; with --client), a CLIENT_ROOT of the file exchange "
             "(with --client) or a client folder (CLIENT_ROOT/client_k, with best_model.safetensors)",
        show_default=False)],
    client: Annotated[Optional[str], typer.Option("--client", help="Client whose model to use, e.g. client_3")] = None,
    manifest: Annotated[Optional[Path], typer.Option(
        "--manifest", help="Dataset folder (or its manifest.csv: id, image, text; labels optional)")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="One case: an image file")] = None,
    report: Annotated[Optional[str], typer.Option("--report", help="One case: the report text")] = None,
    case_id: Annotated[Optional[str], typer.Option("--id", help="Id of the one case (default: image name)")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the predictions here: .csv or .json")] = None,
    shared: Annotated[Optional[Path], typer.Option(
        "--shared-dir", help="For a client folder: the distributed server/global_vectors "
                             "(default: CLIENT_DIR/../server/global_vectors)")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda | auto (default: the run config's)")] = None,
    show: Annotated[int, typer.Option(min=0, help="Rows of the printed table")] = 20,
) -> None:
    """Predict with a trained client's model; same tokenizer and preprocessing as its training run.

    MODEL: a run directory (with --client), a CLIENT_ROOT of the file exchange (with --client) or a client folder.

    Bad rows (unusable image, no image and no report, bad id, a modality the model cannot read) are skipped.

    Columns: id, predicted_label, p_<class>..., modalities (image | text | both), surrogate, label (if given).
    """
    console = Console(soft_wrap=True)
    with usage_errors(ValueError):
        if manifest is not None and (image is not None or report is not None):
            raise ValueError("give --manifest or --image/--report, not both")
        if out is not None:
            output_format(out)
        cases = None if manifest is not None else single_case(image, report, case_id)
    if cases is None:
        cases = read_manifest_cases(manifest)    # a damaged manifest: fedmm.cli.errors, exit 1
    predictor = load_predictor(model, client, shared, device)   # missing run / client: one error line
    preds = predict_cases(predictor, cases)
    console.print(_table(preds, predictor, show))
    if len(preds.rows) > show:
        console.print(f"... {len(preds.rows) - show} more row(s){f' in {out}' if out else ''}", highlight=False)
    if preds.skipped:
        console.print(f"[yellow]skipped {len(preds.skipped)} row(s):[/yellow]", highlight=False)
        for issue in preds.skipped[:MAX_SKIPPED_SHOWN]:
            console.print(f"  {escape(str(issue))}", highlight=False)
        if len(preds.skipped) > MAX_SKIPPED_SHOWN:
            console.print(f"  ... {len(preds.skipped) - MAX_SKIPPED_SHOWN} more", highlight=False)
    if out is not None:
        console.print(f"predictions: {write_predictions(out, preds, predictor)}", highlight=False)
    if not preds.rows:
        print_error("no predictions: every case was skipped (reasons above)")
        raise typer.Exit(code=1)
