"""COCO bbox and segm metrics with faster-coco-eval (default) or
pycocotools (the official API); both give the same numbers."""
import contextlib
import copy
import io

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
              "AR100", "ARs", "ARm", "ARl")
# (metric, IoU, area, maxDets) of COCOeval.stats, as pycocotools prints them.
_ROWS = [("Precision", "AP", "0.50:0.95", "all", 100),
         ("Precision", "AP", "0.50", "all", 100),
         ("Precision", "AP", "0.75", "all", 100),
         ("Precision", "AP", "0.50:0.95", "small", 100),
         ("Precision", "AP", "0.50:0.95", "medium", 100),
         ("Precision", "AP", "0.50:0.95", "large", 100),
         ("Recall", "AR", "0.50:0.95", "all", 1),
         ("Recall", "AR", "0.50:0.95", "all", 10),
         ("Recall", "AR", "0.50:0.95", "all", 100),
         ("Recall", "AR", "0.50:0.95", "small", 100),
         ("Recall", "AR", "0.50:0.95", "medium", 100),
         ("Recall", "AR", "0.50:0.95", "large", 100)]


def format_table(stats):
  """The standard 12-line COCO summary of a stats vector."""
  return "\n".join(
      f" Average {what:<9} ({short}) @[ IoU={iou:<9} | area={area:>6} | "
      f"maxDets={dets:>3d} ] = {value:0.3f}"
      for (what, short, iou, area, dets), value in zip(_ROWS, stats))
EVALUATORS = ("faster_coco_eval", "pycocotools")


def _api(evaluator):
  if evaluator == "faster_coco_eval":
    from faster_coco_eval import COCO, COCOeval_faster
    return COCO, COCOeval_faster
  if evaluator == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval
  raise ValueError(f"evaluator must be one of {EVALUATORS}, got "
                   f"{evaluator!r}")


def coco_metrics(ann_file, results, evaluator="faster_coco_eval",
                 iou_types=("bbox", "segm"), image_ids=None, log=print):
  """Runs COCOeval; returns ({'bbox_AP': ..., 'segm_AR100': ...}, text of
  the printed tables). Metrics are 0 when there are no results."""
  coco_cls, eval_cls = _api(evaluator)
  with contextlib.redirect_stdout(io.StringIO()):
    gt = coco_cls(ann_file)
  metrics, text = {}, []
  for iou_type in iou_types:
    if not results:
      metrics.update({f"{iou_type}_{n}": 0.0 for n in STAT_NAMES})
      continue
    with contextlib.redirect_stdout(io.StringIO()):
      # loadRes edits the dicts (area, bytes counts): give it copies.
      dets = copy.deepcopy(list(results))
      if iou_type == "segm":  # masks ranked by their own score if given
        for r in dets:
          r["score"] = r.pop("mask_score", r["score"])
      dt = gt.loadRes(dets)
      ev = eval_cls(gt, dt, iou_type)
      if image_ids is not None:
        ev.params.imgIds = list(image_ids)
      ev.evaluate()
      ev.accumulate()
      ev.summarize()
    text.append(f"{iou_type}:\n{format_table(ev.stats[:12])}")
    metrics.update({f"{iou_type}_{n}": float(v)
                    for n, v in zip(STAT_NAMES, ev.stats[:12])})
  return metrics, "\n".join(text)
