"""What each pipeline event does to the stored state: one handler per event type, each returning
the configs whose score inputs it changed (the orchestrator rescores them and dispatches).

`bus/schemas.py` has checked every field a handler reads (names, numbers, lists) before it runs:
handlers only act, through the stores (`ConfigStore`, `LeaseManager`).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import redis

from coordinator.bus import events as ev
from coordinator.bus import schemas
from coordinator.bus.events import Event
from coordinator.core.boards import is_config_key_field
from coordinator.core.clock import Clock
from coordinator.core.inputs import is_count, parse_name_list
from coordinator.core.keys import Keys
from coordinator.core.settings import Settings
from coordinator.scheduling.speeds import UNKNOWN_CLASS, table_from, workload_of
from coordinator.stores.configs import ConfigStore
from coordinator.stores.leases import LeaseManager
from coordinator.stores.speeds import SpeedStore

# Where the cluster health hash keeps the nodes the last `open_nodes` took out of dispatch.
CIRCUIT_OPEN_FIELD = "circuit_open_nodes"
Handler = Callable[[Event], list[str]]


@dataclass
class EventHandlers:
    """The handlers, over what they act on (the orchestrator's stores and clock)."""

    settings: Settings
    conn: redis.Redis
    keys: Keys
    configs: ConfigStore
    leases: LeaseManager
    clock: Clock
    on_nodes_changed: Callable[[], None]  # a node's health changed: usable slots are read again

    def by_type(self) -> dict[str, Handler]:
        """Event type -> its handler; other types are acknowledged with nothing to do."""
        return {
            ev.TRAINING_PROGRESS: self._on_training_progress,
            ev.TRAINING_COMPLETE: self._on_training_complete,
            ev.TRAINING_FAILED: self._on_training_end,
            ev.TRAINING_CANCELLED: self._on_training_end,
            ev.TRAINING_PREEMPTED: self._on_training_end,
            ev.TRAINING_BLOCKED_BY_QUALITY: self._on_quality_block,
            ev.CLUSTER_HEALTH_CHANGED: self._on_cluster_health,
            ev.EVALUATION_COMPLETED: self._on_evaluation,
            ev.CURRICULUM_WEIGHTS_UPDATED: self._on_curriculum,
        }

    def _on_training_end(self, event: Event) -> list[str]:
        return [event.fields["config_key"]]  # its slot is free and its inputs changed

    def _on_training_complete(self, event: Event) -> list[str]:
        """Also the model's lineage and the GPU-hours the training took (its attempts preempted before
        included; a multi-GPU attempt's hours times its GPUs): the cost factor's inputs."""
        f = event.fields
        if f.get("model_path"):  # lineage: an evaluation of this model is compared with its parent's
            parent = self._recorded_path(f.get("parent_model") or "")
            self.configs.record_lineage(f["config_key"], self._recorded_path(f["model_path"]), parent or None)
        if f.get("duration_s"):
            earlier, gpus = (float(v or d) for v, d in zip(self.conn.hmget(
                self.keys.job(f["job_id"]), "yielded_gpu_hours", "gpus_held"), (0, 1)))
            wall = float(f["duration_s"]) / 3600 * gpus + earlier
            self.configs.record_training_cost(f["config_key"], wall * self._relative_speed(f["job_id"]))
        return self._on_training_end(event)

    def _job_workload(self, job_id: str) -> tuple[str, str, int]:
        """(workload, GPU class of its current attempt, samples) from the job record."""
        board, command, cls, model, samples = (v.decode() if v else "" for v in self.conn.hmget(
            self.keys.job(job_id), "board_type", "command", "gpu_class", "gpu_model", "samples"))
        cls = cls or model.removeprefix("NVIDIA ").strip()  # `speeds.class_key`: an unclassified GPU's model
        try:
            argv = json.loads(command) if command else []
        except ValueError:
            argv = []
        return workload_of(board, argv), cls, int(float(samples or 0))

    def _relative_speed(self, job_id: str) -> float:
        """How fast the job's GPU class trains its workload, in prior units (RTX 4090 = 1): its
        GPU-hours count as that many reference hours (`cost.py`: an H100 hour is not a 4090 hour).
        1 for an unknown GPU."""
        workload, cls, _samples = self._job_workload(job_id)
        if not cls:
            return 1.0
        g = self.settings.gpus
        return table_from(SpeedStore(self.conn, self.keys).read(), g.classes, g.speed_priors).relative(workload, cls)

    def _on_training_progress(self, event: Event) -> list[str]:
        """A timed epoch (`epoch_time_s`, the trainer's or the worker's clock) teaches the speed of its
        (workload, GPU class): seconds per sample = epoch time / the job's samples. Epochs without a
        time, samples or GPU class teach nothing. Nothing to rescore."""
        f = event.fields
        if not f.get("epoch_time_s"):
            return []
        workload, cls, samples = self._job_workload(f["job_id"])
        cls = f.get("speed_class") or cls  # the attempt's own (the record may be a later attempt's)
        seconds = float(f["epoch_time_s"])
        if samples <= 0 or seconds <= 0 or not cls or cls == UNKNOWN_CLASS:
            return []
        SpeedStore(self.conn, self.keys).observe(workload, cls, seconds / samples,
                                                 self.settings.gpus.speed_smoothing, self.clock(), event.id)
        return []

    def _on_quality_block(self, event: Event) -> list[str]:
        """Block the config until its next export or `until` (default: quality_block_hours from now);
        a queued job for it is held by the worker that takes it (deferred), not lost."""
        config_key, f, now = schemas.config_of(event.fields)[2], event.fields, self.clock()
        default_until = now + self.settings.scheduler.quality_block_hours * 3600
        until = float(f["until"]) if f.get("until") else default_until
        self.configs.block_for_quality(config_key, now, until, {
            "quality_block_reason": f.get("reason", ""), "quality_score": f.get("quality_score", ""),
            "quality_threshold": f.get("threshold", ""), "quality_block_event": event.id,
        })
        return [config_key]

    def _on_cluster_health(self, event: Event) -> list[str]:
        """RingRift's forms: a node's status (`node`, `status`, optional `gpus`); `alive_peers`, a
        list of node names (known nodes missing from it are down) or a count (recorded only);
        `open_nodes`, the nodes whose circuit is open (down until a later event leaves them out);
        and the overall/resilience scores, which name no node (recorded only). Every form is
        recorded on the cluster health hash."""
        f = event.fields
        self.on_nodes_changed()  # usable slots are read again at the next dispatch
        if f.get("node") and f.get("status"):
            self.leases.set_node_health(f["node"], f["status"], int(float(f["gpus"])) if f.get("gpus") else None)
        peers = f.get("alive_peers", "")
        if peers.strip() and not is_count(peers):
            alive = set(parse_name_list(peers, "alive_peers"))
            for node in self.leases.nodes():
                self.leases.set_node_health(node["node"], "healthy" if node["node"] in alive else "down")
        recorded = {k: v for k, v in f.items() if k != "type"}
        if "open_nodes" in f:
            recorded[CIRCUIT_OPEN_FIELD] = json.dumps(self._open_circuits(parse_name_list(f["open_nodes"],
                                                                                          "open_nodes")))
        self.conn.hset(self.keys.cluster_health, mapping={**recorded, "event_id": event.id,
                                                          "recorded_at": f"{self.clock():.3f}"})
        return []

    def _open_circuits(self, open_nodes: list[str]) -> list[str]:
        """Nodes with an open circuit are down; those the last such event named and this one does
        not are healthy again. Returns the list to record."""
        before = json.loads(self.conn.hget(self.keys.cluster_health, CIRCUIT_OPEN_FIELD) or "[]")
        for node in open_nodes:
            self.leases.set_node_health(node, "down")
        for node in sorted(set(before) - set(open_nodes)):
            self.leases.set_node_health(node, "healthy")
        return sorted(set(open_nodes))

    def _on_evaluation(self, event: Event) -> list[str]:
        """Its Elo is recorded whatever its `model_path` says (RingRift's is relative to its own
        working directory: resolved against `training.working_dir`, then matched against the
        config's published models by the store; an unmatched one has lineage "unknown")."""
        e = schemas.parse_evaluation(event)
        at = e.at if e.at is not None else self.clock()
        model = self._recorded_path(e.model_path or "") or None
        self.configs.record_evaluation(e.config_key, e.elo, at, model, event.id, anchored_elo=e.anchored_elo)
        return [e.config_key]

    def _recorded_path(self, path: str) -> str:
        """A path the coordinator records and never opens, as the producer meant it: a relative one
        joined to `training.working_dir` when set (else kept as sent), normalised."""
        if not path:
            return ""
        working_dir = self.settings.training.working_dir
        if not posixpath.isabs(path) and working_dir:
            path = posixpath.join(working_dir, path)
        return posixpath.normpath(path)

    def _on_curriculum(self, event: Event) -> list[str]:
        """Fields of the config-key form are weights; the rest is metadata (schemas.py)."""
        weights = {name: float(value) for name, value in event.fields.items() if is_config_key_field(name)}
        self.configs.set_curriculum_weights(weights)
        return list(weights)
