"""The span and metric names Kindred emits, written down in one place (as the OTel demo does).

Attribute names follow the `kindred.<area>.<name>` pattern; values are typed as noted.
"""

from __future__ import annotations

# --- span names: one per domain step worth seeing in a trace ---
SPAN_RETRIEVE = "retrieval.retrieve"
SPAN_SOURCE = "retrieval.source"  # + ".<source>", e.g. retrieval.source.two_tower; attribute SOURCE too
SPAN_QDRANT_QUERY = "qdrant.query"
SPAN_ONNX_RUN = "onnx.run"  # attribute MODEL_NAME names which model
SPAN_ONLINE_STORE_GET = "online_store.get"
SPAN_MF_SCORE = "mf.score"  # fold-in + the bounded top-n (retrieval_svc.sources.mf)
SPAN_RANK = "ranking.rank"
SPAN_RERANK = "ranking.rerank"
SPAN_RETRIEVAL_CALL = "ranking.call_retrieval"
SPAN_NOTIFY_DECIDE = "notify.decide"
SPAN_NOTIFY_COLLECT_DUE = "notify.collect_due"  # attribute BATCH_SIZE: notifications claimed
SPAN_EVENTS_APPEND = "events.append"
SPAN_SEARCH = "retrieval.search"  # attributes CANDIDATES, MODEL_VERSION (the text encoder),
# SEARCH_COMMON_TERMS_DROPPED
SPAN_SEARCH_RANKED = "ranking.search_ranked"  # attributes FAN_ID, CANDIDATES

# --- attributes ---
FAN_ID = "kindred.fan_id"  # str
SOURCE = "kindred.retrieval.source"  # str, CandidateSource name
# bool, on a source's span: the request switched its candidates off, only its facts were recorded
FACTS_ONLY = "kindred.retrieval.facts_only"
CANDIDATES = "kindred.candidates"  # int, number of candidates in/out of a step
MODEL_NAME = "kindred.model.name"  # str
MODEL_VERSION = "kindred.model.version"  # str
BATCH_SIZE = "kindred.batch_size"  # int
FALLBACK = "kindred.fallback"  # str, why a fallback served the response
DEGRADED = "kindred.degraded"  # bool, a dependency failed and the response is partial
CACHE_HIT = "kindred.cache_hit"  # bool
ONLINE_STORE_NAMESPACE = "kindred.online_store.namespace"  # str, e.g. "fan", "popular"
NOTIFY_POLICY = "kindred.notify.policy"  # str, the serving policy: "rules" or "learned:<model version>"
REPLICATION_EVENT = "kindred.search.replication.event"  # str: apply_failed, ack_lagging, log_unreachable
BACKEND = "kindred.grpc.backend"  # str, the target of one backend of a least-request client
# int, on SPAN_SEARCH: query terms left out of the BM25 candidate lookup (kindred.text.common_terms)
SEARCH_COMMON_TERMS_DROPPED = "kindred.search.common_terms_dropped"
GATE_WAIT_MS = "kindred.compute_gate.wait_ms"  # float, ms a call waited to compute

# --- metrics ---
METRIC_RPC_DURATION = "kindred.rpc.server.duration"  # histogram, ms; attrs rpc.method, rpc.grpc.status_code
METRIC_RPC_SHED = "kindred.rpc.server.shed"  # counter; requests refused with RESOURCE_EXHAUSTED
METRIC_GATE_WAIT = "kindred.compute_gate.wait"  # histogram, ms; attr rpc.method
METRIC_GATE_DROPPED = "kindred.compute_gate.dropped"  # counter; deadline passed or cancelled while waiting
METRIC_DEGRADED = "kindred.degraded_responses"  # counter; attrs kindred.fallback
METRIC_SEARCH_REPLICATION = "kindred.search.replication.faults"  # counter; attrs REPLICATION_EVENT
METRIC_RETRIED_ELSEWHERE = "kindred.grpc.client.retried_elsewhere"  # counter; attrs BACKEND (refusing)
METRIC_NOTIFY_THRESHOLD = "kindred.notify.threshold"  # gauge; the volume controller's send threshold
METRIC_NOTIFY_SEND_RATE = "kindred.notify.send_rate"  # gauge, sends/min; the rate it acts on (EWMA)
