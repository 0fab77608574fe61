"""``SummaryWriter``: TensorBoard event files of scalars, histograms, text and compiled graphs.

Events are written through the ``tensorboard`` package's own protos and event-file writer
(``pip install 'tracejit[tensorboard]'``), so ``tensorboard --logdir runs/`` shows them.
``add_graph`` draws a jitted function's optimized graph with each fused kernel (and each host
step) as a group of its own, the way fusion planned it.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from ..tensors import Tensor

_INSTALL = "pip install 'tracejit[tensorboard]' (or pip install tensorboard)"


def _tb() -> Any:
    try:
        from tensorboard.compat.proto import (
            attr_value_pb2,
            event_pb2,
            graph_pb2,
            node_def_pb2,
            summary_pb2,
            tensor_pb2,
            tensor_shape_pb2,
            versions_pb2,
        )
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise ImportError(f"tracejit.utils.tensorboard needs the tensorboard package: {_INSTALL}") from e

    class Protos:
        pass
    p = Protos()
    for m in (attr_value_pb2, event_pb2, graph_pb2, node_def_pb2, summary_pb2, tensor_pb2,
              tensor_shape_pb2, versions_pb2):
        setattr(p, m.__name__.rsplit(".", 1)[-1], m)
    p.EventFileWriter = EventFileWriter
    return p


def _number(value: Any, what: str) -> float:
    if isinstance(value, Tensor):
        value = np.asarray(value)
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(f"SummaryWriter.{what}: expected one number, got {arr.dtype.name} "
                         f"of shape {arr.shape}")
    return float(arr.reshape(()))


def _step(step: Any, what: str) -> int:
    if step is None:
        return 0
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"SummaryWriter.{what}: step must be an int, got {type(step).__name__}")
    return int(step)


class SummaryWriter:
    """Writes TensorBoard event files under ``log_dir`` (default ``runs/<date>_<host>``)."""

    def __init__(self, log_dir: str | os.PathLike | None = None, comment: str = "",
                 max_queue: int = 10, flush_secs: int = 120, filename_suffix: str = "") -> None:
        self._pb = _tb()
        if log_dir is None:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = os.fspath(log_dir)
        self._opts = dict(max_queue_size=max_queue, flush_secs=flush_secs, filename_suffix=filename_suffix)
        self._writer = self._pb.EventFileWriter(self.log_dir, **self._opts)
        self._children: dict[str, Any] = {}      # add_scalars: one run directory per series
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    def _event(self, writer: Any, step: int, walltime: float | None, **fields: Any) -> None:
        if self._closed:
            raise RuntimeError(f"SummaryWriter({self.log_dir!r}) is closed")
        ev = self._pb.event_pb2.Event(wall_time=time.time() if walltime is None else walltime, step=step,
                                      **fields)
        writer.add_event(ev)

    def _summary(self, tag: str, step: Any, walltime: float | None, what: str, writer: Any = None,
                 **value: Any) -> None:
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"SummaryWriter.{what}: tag must be a non-empty str, got {tag!r}")
        s = self._pb.summary_pb2.Summary(value=[self._pb.summary_pb2.Summary.Value(tag=tag, **value)])
        self._event(writer or self._writer, _step(step, what), walltime, summary=s)

    # ------------------------------------------------------------------ summaries
    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        """One number (a Python number, or a tensor or array with one element) at ``global_step``."""
        self._summary(tag, global_step, walltime, "add_scalar",
                      simple_value=_number(scalar_value, "add_scalar"))

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any], global_step: int | None = None,
                    walltime: float | None = None) -> None:
        """Several series in one chart: each key goes to its own run ``<log_dir>/<main_tag>_<key>``."""
        if not isinstance(tag_scalar_dict, Mapping) or not tag_scalar_dict:
            raise TypeError("SummaryWriter.add_scalars: expected a non-empty dict of name -> number")
        for key, value in tag_scalar_dict.items():
            name = f"{main_tag}_{key}".replace("/", "_")
            child = self._children.get(name)
            if child is None:
                child = self._children[name] = self._pb.EventFileWriter(os.path.join(self.log_dir, name),
                                                                        **self._opts)
            self._summary(main_tag, global_step, walltime, "add_scalars", writer=child,
                          simple_value=_number(value, "add_scalars"))

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: Any = 64,
                      walltime: float | None = None) -> None:
        """The distribution of ``values`` (any shape); ``bins`` as for ``np.histogram``."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if arr.size == 0:
            raise ValueError(f"SummaryWriter.add_histogram({tag!r}): no values")
        if not np.isfinite(arr).all():
            raise ValueError(f"SummaryWriter.add_histogram({tag!r}): values contain NaN or infinity")
        counts, edges = np.histogram(arr, bins=bins)
        h = self._pb.summary_pb2.HistogramProto(
            min=float(arr.min()), max=float(arr.max()), num=float(arr.size), sum=float(arr.sum()),
            sum_squares=float(np.dot(arr, arr)), bucket_limit=edges[1:].tolist(),
            bucket=counts.astype(float).tolist())
        self._summary(tag, global_step, walltime, "add_histogram", histo=h)

    def add_text(self, tag: str, text_string: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """Text (Markdown) shown by TensorBoard's text dashboard."""
        if not isinstance(text_string, str):
            raise TypeError(f"SummaryWriter.add_text: text must be a str, got {type(text_string).__name__}")
        pb = self._pb
        meta = pb.summary_pb2.SummaryMetadata(plugin_data=pb.summary_pb2.SummaryMetadata.PluginData(
            plugin_name="text"))
        tensor = pb.tensor_pb2.TensorProto(
            dtype="DT_STRING", string_val=[text_string.encode()],
            tensor_shape=pb.tensor_shape_pb2.TensorShapeProto(dim=[pb.tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        self._summary(tag, global_step, walltime, "add_text", metadata=meta, tensor=tensor)

    def add_graph(self, fn: Any, *example_args: Any, **example_kwargs: Any) -> None:
        """The optimized graph of ``fn`` (a jitted function, or a plain one, jitted here) for
        these example arguments (tensors or ``tj.spec``), fused kernels drawn as groups."""
        from ..jit import Jitted, jit
        jitted = fn if isinstance(fn, Jitted) else jit(fn)
        entry = jitted.lower(*example_args, **example_kwargs).entry
        graph_def = graph_def_of(entry, self._pb)
        self._event(self._writer, 0, None, graph_def=graph_def.SerializeToString())

    # ------------------------------------------------------------------ lifetime
    def flush(self) -> None:
        """Write pending events to disk."""
        for w in (self._writer, *self._children.values()):
            w.flush()

    def close(self) -> None:
        """Flush and close the event files (later adds raise)."""
        if not self._closed:
            for w in (self._writer, *self._children.values()):
                w.close()
            self._closed = True

    def __enter__(self) -> SummaryWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def graph_def_of(entry: Any, pb: Any = None) -> Any:
    """A TensorBoard ``GraphDef`` of a compiled entry's graph: node names scoped by the kernel or
    host step that computes them (``kernel3_add_7/mul``), so the graph view folds each fused
    kernel into one box."""
    from ..explanation import Explanation
    pb = pb or _tb()
    ex = Explanation(entry)
    graph = ex.compiled.graph if ex.compiled else ex.graph
    names = graph.names()
    step_names: dict[int, str] = {}
    if ex.compiled is not None:
        for k, step in enumerate(ex.compiled.plan.steps):
            kernel = getattr(step, "kernel", None)
            label = f"kernel{k}_{kernel.name}" if kernel is not None \
                else f"step{k}_{graph.node(step.node).op}"
            for m in ex.step_members(step):
                step_names.setdefault(m, label)

    def full(nid: int) -> str:
        n = graph.node(nid)
        scope = "inputs" if n.op == "input" else step_names.get(nid, "views")
        return f"{scope}/{names[nid]}"

    def shape_attr(aval: Any) -> Any:
        dims = [pb.tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in aval.shape]
        return pb.attr_value_pb2.AttrValue(list=pb.attr_value_pb2.AttrValue.ListValue(
            shape=[pb.tensor_shape_pb2.TensorShapeProto(dim=dims)]))

    nodes = []
    for nid in graph.topo():
        n = graph.node(nid)
        attr = {"_output_shapes": shape_attr(n.aval),
                "dtype": pb.attr_value_pb2.AttrValue(s=n.aval.dtype.name.encode())}
        for k, v in n.params.items():
            text = f"array{list(v.shape)}" if isinstance(v, np.ndarray) and v.size > 8 else repr(v)
            attr[k] = pb.attr_value_pb2.AttrValue(s=text.encode())
        if n.source:
            attr["source"] = pb.attr_value_pb2.AttrValue(s=n.source.encode())
        nodes.append(pb.node_def_pb2.NodeDef(name=full(nid), op=n.op, input=[full(i) for i in n.inputs],
                                             attr=attr))
    for k, o in enumerate(graph.outputs):
        nodes.append(pb.node_def_pb2.NodeDef(name=f"outputs/out{k}", op="output", input=[full(o)]))
    return pb.graph_pb2.GraphDef(node=nodes, versions=pb.versions_pb2.VersionDef(producer=22))


__all__ = ["SummaryWriter", "graph_def_of"]
