"""Every Redis key and queue name the relay uses, in one place."""

from __future__ import annotations

PREFIX = "relay:"
FANOUT_QUEUE = "relay.fanout"
FAMILIES = ("notify", "pm", "storage", "webhook")
FANOUT_TASK = "relay.fanout"
DELIVER_TASK = "relay.deliver"

SCHEDULE = PREFIX + "schedule"  # ZSET delivery_id -> due time
INFLIGHT = PREFIX + "inflight"  # ZSET "fanout:<event>" / "deliver:<delivery>" -> deadline
DLQ = PREFIX + "dlq"  # ZSET delivery_id -> time it died
EVENTS = PREFIX + "events"  # ZSET event_id -> received time
SCHEDULER_HEARTBEAT = PREFIX + "scheduler:heartbeat"
# STRING: when a relay first used this Redis (epoch s); never expires. CLI commands look
# for it (or for other keys only a running relay writes, ``USED_BY_RELAY``) so that a
# Redis no relay has used is reported as such instead of as empty queues.
SEEN = PREFIX + "seen"
WORKERS = PREFIX + "workers"  # ZSET worker id -> its last heartbeat (Redis's clock, epoch s)
# kombu's Redis transport keeps each reserved message here until it is acked (its default
# names: the Celery app does not change them): tag -> [message, exchange, routing key]
KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"  # ZSET delivery tag -> when it was reserved


def deliver_queue(family: str) -> str:
    return f"relay.deliver.{family}"


ALL_QUEUES = (FANOUT_QUEUE, *(deliver_queue(f) for f in FAMILIES))


def dedupe(source_id: str, key: str) -> str:
    return f"{PREFIX}dedupe:{source_id}:{key}"


def single_use(source_id: str, credential: str) -> str:
    """A credential (signature) that may carry only one message; see ``accept_event``."""
    return f"{PREFIX}once:{source_id}:{credential}"


def event(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}"


def event_deliveries(event_id: str) -> str:
    return f"{PREFIX}event:{event_id}:deliveries"


def delivery(delivery_id: str) -> str:
    return f"{PREFIX}delivery:{delivery_id}"


def attempts(delivery_id: str) -> str:
    return f"{PREFIX}attempts:{delivery_id}"


def lock(delivery_id: str) -> str:
    return f"{PREFIX}lock:{delivery_id}"


def worker_held(worker_id: str) -> str:
    """HASH: what one worker holds: ``<delivery tag>`` -> ``""`` per reserved message, and
    ``<delivery tag> deliver:<delivery id>`` -> lock token per run begun from it."""
    return f"{PREFIX}worker:{worker_id}:held"


def target_state(target_id: str) -> str:
    """Hash: pause flag, circuit state and counters of one target."""
    return f"{PREFIX}target:{target_id}:state"


def target_calls(target_id: str) -> str:
    """ZSET of recent attempt outcomes, for the breaker's failure rate."""
    return f"{PREFIX}target:{target_id}:calls"


def target_throttle(target_id: str) -> str:
    """Until when the platform throttles the whole target (ms since the epoch)."""
    return f"{PREFIX}target:{target_id}:throttle"


def target_running(target_id: str) -> str:
    """ZSET of the target's attempts in flight: token -> end of its lease (ms)."""
    return f"{PREFIX}target:{target_id}:running"


def target_slow(target_id: str) -> str:
    """ZSET of the running attempts' slow-call deadlines (ms); ``inf`` once counted."""
    return f"{PREFIX}target:{target_id}:slow"


def target_rate(target_id: str, rate_index: int) -> str:
    """ZSET of the send times inside one rate's sliding window."""
    return f"{PREFIX}target:{target_id}:rate:{rate_index}"


API_KEYS = PREFIX + "apikeys"  # SET of key ids
AUDIT = PREFIX + "audit"  # STREAM of operator actions and auth failures
AUDIT_PENDING = PREFIX + "audit:pending"  # ZSET of refusal counts not yet in the stream


def audit_failures(minute: int | str = "") -> str:
    """HASH of one minute's refusals by action, outcome and address (first entry id and
    the count not yet written); ``""`` gives the prefix the script appends minutes to."""
    return f"{PREFIX}audit:failures:{minute}"


def api_key(key_id: str) -> str:
    """Hash: name, scope, SHA-256 of the key, rotation and revocation times."""
    return f"{PREFIX}apikey:{key_id}"


def source_rate(source_id: str, rate_index: int) -> str:
    """ZSET of accepted request times inside one inbound rate window of a source."""
    return f"{PREFIX}source:{source_id}:rate:{rate_index}"


def poll_offset(source_id: str) -> str:
    """The next ``getUpdates`` offset (last queued ``update_id`` + 1) of a polled source."""
    return f"{PREFIX}poll:{source_id}:offset"


STATS_SOURCES = PREFIX + "stats:sources"  # HASH, cumulative counts per source, never expires
STATS_TARGETS = PREFIX + "stats:targets"  # HASH, cumulative counts per target, never expires


def stats_minute(minute: int) -> str:
    """HASH of one minute's counts; ``minute`` is its start in epoch seconds."""
    return f"{PREFIX}stats:minute:{minute}"


DASHBOARD_SECRET_KEY = PREFIX + "dashboard:secret_key"  # STRING, the generated signing key


def dashboard_session(sid: str) -> str:
    """STRING: the key id a logged-in dashboard session belongs to; expires with it."""
    return f"{PREFIX}dashboard:session:{sid}"


def dashboard_replay(batch: str) -> str:
    """STRING (JSON): the delivery ids one dashboard replay sent again, which the page it
    leads to follows; expires after a day."""
    return f"{PREFIX}dashboard:replay:{batch}"


def sent_steps(kind: str, delivery_id: str) -> str:
    """SET of the steps (URLs, messages) of one delivery a multi-step target already sent."""
    return f"{PREFIX}{kind}:sent:{delivery_id}"


def dingtalk_token(digest: str) -> str:
    """STRING: a cached DingTalk app access token, by digest of API base and app key."""
    return f"{PREFIX}dingtalk:token:{digest}"


# Keys only a relay writes: any of them means a relay has used this Redis. The stats
# hashes never expire; the others are written by a running scheduler, worker or web.
USED_BY_RELAY = (
    SEEN,
    STATS_SOURCES,
    STATS_TARGETS,
    SCHEDULER_HEARTBEAT,
    WORKERS,
    EVENTS,
    API_KEYS,
    DLQ,
    SCHEDULE,
    DASHBOARD_SECRET_KEY,
)


def ledger(delivery_id: str) -> str:
    """HASH: what a project-management or storage delivery has done in the world so far
    (the task it created, each file it stored), so a retry never does it twice."""
    return f"{PREFIX}ledger:{delivery_id}"


def message_tasks(source_id: str, group_id: str, message_id: str) -> str:
    """HASH: target id -> the task (JSON) a chat message created there."""
    return f"{PREFIX}tasks:message:{source_id}:{group_id}:{message_id}"


def event_tasks(event_id: str) -> str:
    """HASH: target id -> the task (JSON) an event created or acted on there."""
    return f"{PREFIX}tasks:event:{event_id}"


def task_origin(target_id: str, task_key: str) -> str:
    """STRING: the chat message (JSON: source, group, message id, event) a task came from."""
    return f"{PREFIX}tasks:origin:{target_id}:{task_key}"


def feishu_token(digest: str) -> str:
    """STRING: a cached Feishu tenant token, by digest of API base and app id."""
    return f"{PREFIX}feishu:token:{digest}"


def wecom_token(digest: str) -> str:
    """STRING: a cached WeCom app token, by digest of API base, corp id and app Secret
    (each app of a corp has its own Secret, and so its own token)."""
    return f"{PREFIX}wecom:token:{digest}"


def feishu_drive_pace(digest: str) -> str:
    """ZSET: a Feishu app's Drive calls in the last second (a sliding window), by digest
    of API base and app id."""
    return f"{PREFIX}feishu:drive:pace:{digest}"


def feishu_folder(digest: str) -> str:
    """STRING: a Feishu Drive subfolder's token, by digest of API base, root and path."""
    return f"{PREFIX}feishu:folder:{digest}"


def feishu_file(digest: str) -> str:
    """STRING (JSON): size and SHA-256 of a file a feishu_drive target uploaded, by digest
    of API base and file token."""
    return f"{PREFIX}feishu:file:{digest}"


def feishu_pending(digest: str) -> str:
    """STRING (JSON), TTL: a feishu_drive upload under way (its size and SHA-256, and the
    tokens of the files that had the name before it), by digest of base, folder, name."""
    return f"{PREFIX}feishu:pending:{digest}"


def linear_team(account: str, ref: str) -> str:
    """STRING, TTL: a Linear team (JSON: id, key, name) by key or id, cached for workers."""
    return f"{PREFIX}linear:team:{account}:{ref}"


RESEAL = PREFIX + "reseal"  # HASH: a rotate-data walk's position and counts, for a resumed run
RESEAL_LOCK = PREFIX + "reseal:lock"  # STRING, TTL: the token of the rotate-data run walking now


def github_token(digest: str) -> str:
    """STRING: a cached GitHub App installation token, by digest of API base, app id and
    installation id."""
    return f"{PREFIX}github:token:{digest}"


def task_echoes(target_id: str, task_key: str) -> str:
    """HASH, TTL: action -> how many changes the relay made to a task that the tool has
    not reported back yet (its webhook for them is an echo, not posted again)."""
    return f"{PREFIX}tasks:echo:{target_id}:{task_key}"


def task_burst(target_id: str, task_key: str) -> str:
    """STRING, TTL: the delivery gathering a task's changes into one message until it runs."""
    return f"{PREFIX}tasks:burst:{target_id}:{task_key}"


def task_updates(delivery_id: str) -> str:
    """HASH, TTL: event id -> the change (JSON) a gathering delivery tells."""
    return f"{PREFIX}tasks:updates:{delivery_id}"


def lane(target_id: str, source_id: str, group_id: str) -> str:
    """ZSET, TTL: an ordered target's deliveries of one group (of one source), by the
    time their event was accepted; the lowest one alone may be sent (``relay.state.lanes``)."""
    return f"{PREFIX}lane:{target_id}:{source_id}:{group_id}"


# STRING: the acceptance time up to which every event has been fanned out (or waited for
# long enough): an ordered delivery goes only once every earlier event joined its lanes
FANNED_OUT = PREFIX + "lanes:fanned_out"


def content(target_id: str, sha256: str) -> str:
    """STRING: where a storage target with ``dedupe: content`` stored these bytes (JSON)."""
    return f"{PREFIX}content:{target_id}:{sha256}"
