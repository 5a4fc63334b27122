"""COCO bbox and segm metrics with faster-coco-eval (default) or
pycocotools (the official API); both give the same numbers."""
import contextlib
import copy
import io

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
              "AR100", "ARs", "ARm", "ARl")
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
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
      # loadRes edits the dicts (area, bytes counts): give it copies.
      dt = gt.loadRes(copy.deepcopy(list(results)))
      ev = eval_cls(gt, dt, iou_type)
      if image_ids is not None:
        ev.params.imgIds = list(image_ids)
      ev.evaluate()
      ev.accumulate()
      ev.summarize()
    table = "\n".join(l for l in buf.getvalue().splitlines()
                      if "Average" in l)
    text.append(f"{iou_type}:\n{table}")
    metrics.update({f"{iou_type}_{n}": float(v)
                    for n, v in zip(STAT_NAMES, ev.stats[:12])})
  return metrics, "\n".join(text)
