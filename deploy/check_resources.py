#!/usr/bin/env python3
"""Checks deploy/ against what examflow needs, offline (run by scripts/check-deploy).

kubernetes-validate checks the shape of the built-in kinds; this checks the meaning, with
the examflow.toml each overlay's ConfigMap holds as the reference:

- the custom resources (Strimzi Kafka, KafkaNodePool, KafkaTopic, KafkaConnect,
  KafkaConnector; Percona PerconaServerMongoDB): topic names, partitions and sizes, the
  Debezium connector's prefix, database and collection, [cdc] enabled = false beside it,
  ingest replicas <= the attempts topic's partitions, bootstrap addresses;
- the workloads: the config file, data dir, ports and probes agree with the file; secrets
  come from Secrets (never a committed Secret, a literal env value or the ConfigMap);
  replicas share the token and pseudonym secrets, MongoDB and the lake;
- Services, Ingress, PodDisruptionBudgets and the autoscaler point at what exists;
- overlays/seed's examflow.toml equals the base's apart from the keys it exists to change;
- deploy/compose.yaml: its topics, broker and S3 server agree with its examflow.toml.

Usage: check_resources.py NAME=RENDERED.yaml... [--compose deploy/compose.yaml]
(RENDERED: `kubectl kustomize` output of overlay NAME; `base` is compared with `seed`).
Prints one line per finding and exits 1 on any.
"""

import argparse
import ipaddress
import os
import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    sys.exit("check_resources.py needs Python 3.11 or newer (tomllib)")

import yaml

# examflow.toml's top-level tables (api/src/config.rs: every struct denies unknown fields).
CONFIG_TABLES = {
    "server",
    "storage",
    "auth",
    "kafka",
    "ingest",
    "cdc",
    "adaptive",
    "sql",
    "pgwire",
    "exam_defaults",
    "exams",
    "limits",
}
# Defaults of the keys checked here (README "Configuration").
DEFAULTS = {
    "server.listen": "127.0.0.1:8080",
    "storage.data_dir": "examflow-data",
    "storage.mongodb_database": "exams",
    "kafka.brokers": "",
    "kafka.topic_prefix": "mongo-trigger-topic",
    "kafka.email_topic": "email-topic",
    "kafka.partitions": 2,
    "kafka.replication_factor": 1,
    "kafka.max_message_bytes": 8388608,
    "ingest.enabled": True,
    "ingest.attempts_topic": "exams",
    "cdc.enabled": True,
    "cdc.collection": "score",
}
# examflow's producer and the topics it creates allow this much on top of max_message_bytes
# (ingest/src/delivery.rs RECORD_OVERHEAD_BYTES).
RECORD_OVERHEAD_BYTES = 64 * 1024
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588
# Keys of overlays/seed's examflow.toml that may differ from the base's.
# (the seed's own Kafka cluster fixes its replication; the base takes the cluster's default)
SEED_MAY_CHANGE = {"cdc.enabled", "kafka.replication_factor"}
# Config keys that hold secrets: never in a ConfigMap or a committed file.
SECRET_KEYS = {"auth.jwt_secret", "auth.pseudonym_secret"}
SECRET_OPTION = re.compile(r"secret|password|token|access_key", re.I)
SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|MONGODB_URI", re.I)
STRIMZI = "kafka.strimzi.io/"


class Findings:
    def __init__(self):
        self.problems = []
        self.notes = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")

    def note(self, where, message):
        self.notes.append(f"{where}: {message}")


def setting(config, dotted):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return DEFAULTS.get(dotted)
        node = node[part]
    return node


def flatten(table, prefix=""):
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def host_port(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def dlq(topic):
    return f"{topic}.dlq"


def topic_plan(config):
    """The topics examflow uses: name -> (partitions it must have or None, carries payloads)."""
    partitions = setting(config, "kafka.partitions")
    change = f"{setting(config, 'kafka.topic_prefix')}.exams.score"
    attempts = setting(config, "ingest.attempts_topic")
    return {
        attempts: (None, True),  # produced by produce-attempts or the platform
        dlq(attempts): (partitions, False),
        change: (partitions, True),
        dlq(change): (partitions, False),
        setting(config, "kafka.email_topic"): (partitions, True),
    }


class Overlay:
    def __init__(self, name, path, findings):
        self.name = name
        self.f = findings
        with open(path) as handle:
            self.docs = [d for d in yaml.safe_load_all(handle) if d]
        self.config = None
        self.config_map = None

    def kinds(self, kind, api=None):
        return [
            d
            for d in self.docs
            if d.get("kind") == kind and (api is None or d.get("apiVersion", "").startswith(api))
        ]

    def where(self, doc):
        return f"{self.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"

    # -- the configuration ------------------------------------------------------------

    def load_config(self):
        maps = [d for d in self.kinds("ConfigMap") if "examflow.toml" in (d.get("data") or {})]
        if len(maps) != 1:
            self.f.fail(self.name, f"{len(maps)} ConfigMaps hold examflow.toml; expected one")
            return False
        self.config_map = maps[0]
        text = maps[0]["data"]["examflow.toml"]
        try:
            self.config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.f.fail(self.where(maps[0]), f"examflow.toml is not TOML: {e}")
            return False
        check_config_text(self.f, self.where(maps[0]), self.config)
        return True

    # -- Secrets ----------------------------------------------------------------------

    def check_no_secrets(self):
        for doc in self.kinds("Secret"):
            self.f.fail(
                self.where(doc),
                'a Secret is committed; create it beside the manifests (README "Deploy")',
            )

    def secret_refs(self):
        refs = set()

        def walk(node):
            if isinstance(node, dict):
                for key in ("secretKeyRef", "secretRef"):
                    if isinstance(node.get(key), dict) and node[key].get("name"):
                        refs.add(node[key]["name"])
                if isinstance(node.get("secret"), dict) and node["secret"].get("secretName"):
                    refs.add(node["secret"]["secretName"])
                if isinstance(node.get("passwordSecretRef"), dict):
                    refs.add(node["passwordSecretRef"]["name"])
                for key in ("secretName", "pushSecret"):
                    if isinstance(node.get(key), str):
                        refs.add(node[key])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
            elif isinstance(node, str):
                for match in re.finditer(r"\$\{secrets:[^/}]+/([^:}]+):", node):
                    refs.add(match.group(1))

        walk(self.docs)
        return refs

    # -- workloads --------------------------------------------------------------------

    def workloads(self):
        """(doc, pod spec, examflow container, subcommand) of every examflow workload."""
        out = []
        for doc in self.docs:
            if doc.get("kind") not in ("Deployment", "StatefulSet"):
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("containers", []):
                args = container.get("args") or container.get("command") or []
                if "examflow" in container.get("image", "") and args:
                    out.append((doc, pod, container, args[0]))
        return out

    def check_workloads(self):
        config = self.config
        found = self.workloads()
        serves = [w for w in found if w[3] == "serve"]
        ingests = [w for w in found if w[3] == "ingest"]
        if not serves:
            self.f.fail(self.name, "no workload runs `examflow serve`")
        for doc, pod, container, command in found:
            where = self.where(doc)
            env = {e["name"]: e for e in container.get("env", [])}
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}

            # The file examflow reads is the ConfigMap's.
            path = env.get("EXAMFLOW_CONFIG", {}).get("value")
            config_dir = os.path.dirname(path or "")
            mount = mounts.get(config_dir)
            volume = volumes.get(mount["name"]) if mount else None
            if (
                not path
                or not volume
                or volume.get("configMap", {}).get("name") != self.config_map["metadata"]["name"]
            ):
                self.f.fail(
                    where,
                    f"EXAMFLOW_CONFIG ({path}) is not examflow.toml of ConfigMap {self.config_map['metadata']['name']}",
                )

            # Secrets only from Secrets.
            for name, entry in env.items():
                if SECRET_ENV.search(name) and "value" in entry:
                    self.f.fail(where, f"env {name} is a literal; take it from a Secret")
                if name in (
                    "EXAMFLOW_MONGODB_URI",
                    "AWS_SECRET_ACCESS_KEY",
                    "AWS_ACCESS_KEY_ID",
                ) and "secretKeyRef" not in entry.get("valueFrom", {}):
                    self.f.fail(where, f"env {name} must come from a secretKeyRef")

            # A pinned image (the base's `images:` reaches only the base's own resources).
            image = container.get("image", "")
            if "@sha256:" not in image and (
                ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
            ):
                self.f.fail(
                    where, f"image {image!r} has no tag or digest (kustomization `images:`)"
                )

            # Hardening the Dockerfile's user relies on.
            security = container.get("securityContext", {})
            if not security.get("readOnlyRootFilesystem"):
                self.f.fail(where, "readOnlyRootFilesystem is not true")
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                self.f.fail(where, "runAsNonRoot is not true")

            # The data dir is a writable volume.
            data_dir = setting(config, "storage.data_dir")
            data = mounts.get(data_dir)
            if not data or data.get("readOnly"):
                self.f.fail(where, f"data_dir {data_dir} is not a writable volume mount")
            elif data["name"] not in claims and "emptyDir" not in volumes.get(data["name"], {}):
                self.f.fail(where, f"data_dir {data_dir} is neither an emptyDir nor a volume claim")
            if "/tmp" not in mounts:
                self.f.fail(where, "/tmp is not a volume (the root filesystem is read-only)")

            # Kafka for ingest: from the file or EXAMFLOW_KAFKA_BROKERS.
            if command == "ingest" and not (
                setting(config, "kafka.brokers") or "EXAMFLOW_KAFKA_BROKERS" in env
            ):
                self.f.fail(where, "examflow ingest without [kafka] brokers")

            # An S3 lake needs credentials in the environment, from Secrets.
            lake_uri = setting(config, "storage.lake_uri") or ""
            if lake_uri.startswith(("s3://", "s3a://")):
                for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    if name not in env:
                        self.f.fail(where, f"an s3:// lake without {name} (from a Secret)")
                if "AWS_REGION" not in env and "region" not in (
                    setting(config, "storage.lake_options") or {}
                ):
                    self.f.fail(
                        where, "an s3:// lake without AWS_REGION or [storage.lake_options] region"
                    )

            if command == "serve":
                self.check_serve(where, doc, container, mounts, volumes)

        # One lake, one store, one set of secrets for every process.
        many = sum(replicas(d) for d, *_ in serves) > 1 or bool(ingests)
        lake_uri = setting(config, "storage.lake_uri")
        if many and not lake_uri:
            self.f.fail(
                self.name, "several examflow processes with a local lake: each would have its own"
            )
        if sum(replicas(d) for d, *_ in serves) > 1:
            for doc, _pod, container, _ in serves:
                env = {e["name"] for e in container.get("env", [])}
                if not setting(config, "storage.mongodb_uri") and "EXAMFLOW_MONGODB_URI" not in env:
                    self.f.fail(
                        self.where(doc),
                        "several serve replicas on embedded stores: results would be split between pods",
                    )
        # serve ingesting beside examflow-ingest would put more consumers in the group.
        if (
            ingests
            and setting(config, "ingest.enabled")
            and (
                setting(config, "kafka.brokers")
                or any(
                    e["name"] == "EXAMFLOW_KAFKA_BROKERS"
                    for _, _, c, _ in serves
                    for e in c.get("env", [])
                )
            )
        ):
            self.f.fail(
                self.name,
                "[ingest] enabled = true: serve would ingest too, beside the ingest workload; set it false",
            )
        return ingests

    def check_serve(self, where, doc, container, mounts, volumes):
        config = self.config
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        _, http_port = host_port(setting(config, "server.listen"))
        listen_host, _ = host_port(setting(config, "server.listen"))
        if is_loopback(listen_host):
            self.f.fail(
                where,
                f"[server] listen {setting(config, 'server.listen')} is loopback: probes and Services cannot reach it",
            )
        if ports.get("http") != http_port:
            self.f.fail(
                where,
                f"containerPort http ({ports.get('http')}) is not [server] listen's port {http_port}",
            )
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ("http", http_port):
                self.f.fail(where, f"{probe} is not GET {path} on the http port")
        pgwire = setting(config, "pgwire.listen")
        if pgwire:
            host, port = host_port(pgwire)
            if not is_loopback(host):
                if ports.get("pgwire") != port:
                    self.f.fail(
                        where,
                        f"containerPort pgwire ({ports.get('pgwire')}) is not [pgwire] listen's port {port}",
                    )
                if not setting(config, "pgwire.tls_cert_file"):
                    self.f.fail(
                        where,
                        "pgwire beyond loopback without TLS: tokens would cross the network in clear",
                    )
            for key in ("pgwire.tls_cert_file", "pgwire.tls_key_file"):
                file = setting(config, key)
                mount = mounts.get(os.path.dirname(file)) if file else None
                if file and (not mount or "secret" not in volumes.get(mount["name"], {})):
                    self.f.fail(where, f"{key} {file} is not in a mounted Secret")
        # Replicas share the token and pseudonym secrets: files in the data dir from a Secret.
        if replicas(doc) > 1 or doc["kind"] == "Deployment":
            data_dir = setting(config, "storage.data_dir")
            for file in ("jwt-secret", "pseudonym-secret"):
                mount = mounts.get(f"{data_dir}/{file}")
                if not mount or "secret" not in volumes.get(mount["name"], {}):
                    self.f.fail(
                        where,
                        f"{data_dir}/{file} is not mounted from a Secret: replicas would each generate their own",
                    )

    # -- Services, Ingress, budgets, autoscaler ------------------------------------------

    def check_wiring(self):
        pods = [
            (doc["spec"]["template"]["metadata"].get("labels", {}), pod)
            for doc, pod, *_ in self.workloads()
        ]
        services = {d["metadata"]["name"]: d for d in self.kinds("Service")}
        for svc in services.values():
            selected = [
                pod for labels, pod in pods if labels_match(svc["spec"].get("selector"), labels)
            ]
            if not selected:
                self.f.fail(self.where(svc), "selects no examflow pod")
                continue
            for port in svc["spec"].get("ports", []):
                target = port.get("targetPort", port["port"])
                known = {
                    p.get("name") if isinstance(target, str) else p["containerPort"]
                    for pod in selected
                    for c in pod["containers"]
                    for p in c.get("ports", [])
                }
                if target not in known:
                    self.f.fail(
                        self.where(svc), f"targetPort {target} is no container port of its pods"
                    )
        for ing in self.kinds("Ingress"):
            for rule in ing["spec"].get("rules", []):
                for path in rule.get("http", {}).get("paths", []):
                    backend = path["backend"]["service"]
                    svc = services.get(backend["name"])
                    names = {p.get("name") for p in svc["spec"]["ports"]} if svc else set()
                    if not svc or backend["port"].get("name", "") not in names | {""}:
                        self.f.fail(self.where(ing), f"backend {backend} is no Service port")
        for pdb in self.kinds("PodDisruptionBudget"):
            selector = pdb["spec"]["selector"]["matchLabels"]
            if not any(labels_match(selector, labels) for labels, _ in pods):
                self.f.fail(self.where(pdb), "selects no examflow pod")
        workloads = {(d["kind"], d["metadata"]["name"]): d for d, *_ in self.workloads()}
        for hpa in self.kinds("HorizontalPodAutoscaler"):
            ref = hpa["spec"]["scaleTargetRef"]
            target = workloads.get((ref["kind"], ref["name"]))
            if not target:
                self.f.fail(
                    self.where(hpa), f"scales {ref['kind']}/{ref['name']}, which does not exist"
                )
            elif hpa["spec"].get("minReplicas", 1) < 2:
                self.f.fail(self.where(hpa), "minReplicas below 2: a node drain would stop serving")

    # -- Strimzi and Debezium -----------------------------------------------------------

    def check_kafka(self, ingests):
        config = self.config
        clusters = self.kinds("Kafka", STRIMZI)
        topics = self.kinds("KafkaTopic", STRIMZI)
        brokers_setting = setting(config, "kafka.brokers")
        if not clusters:
            if topics:
                self.f.fail(self.name, "KafkaTopics without a Kafka cluster")
            if ingests:
                self.f.note(
                    self.name,
                    "no KafkaTopic here: ingest replicas vs. partitions is checked where the topics are",
                )
            return
        if len(clusters) != 1:
            self.f.fail(self.name, f"{len(clusters)} Kafka clusters; expected one")
            return
        kafka = clusters[0]
        cluster = kafka["metadata"]["name"]
        listeners = kafka["spec"]["kafka"]["listeners"]
        plain_ports = {listener["port"] for listener in listeners if not listener.get("tls")}
        bootstrap = f"{cluster}-kafka-bootstrap"
        for address in filter(None, brokers_setting.split(",")):
            host, port = host_port(address.strip())
            if host.split(".")[0] != bootstrap or port not in plain_ports:
                self.f.fail(
                    self.where(self.config_map),
                    f"[kafka] brokers {address} is not {bootstrap} on a plain listener {sorted(plain_ports)} (examflow's librdkafka has no TLS)",
                )
        pools = [
            p
            for p in self.kinds("KafkaNodePool", STRIMZI)
            if p["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster
        ]
        brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
        if not brokers:
            self.f.fail(self.where(kafka), "no KafkaNodePool with the broker role")
        broker_config = kafka["spec"]["kafka"].get("config", {})

        declared = {}
        for topic in topics:
            where = self.where(topic)
            if topic["metadata"].get("labels", {}).get("strimzi.io/cluster") != cluster:
                self.f.fail(where, f"not labelled strimzi.io/cluster: {cluster}")
            spec = topic["spec"]
            name = spec.get("topicName", topic["metadata"]["name"])
            declared[name] = topic
            replicas_ = spec.get("replicas", broker_config.get("default.replication.factor", 1))
            if replicas_ > brokers:
                self.f.fail(where, f"{replicas_} replicas on {brokers} brokers")
            isr = spec.get("config", {}).get(
                "min.insync.replicas", broker_config.get("min.insync.replicas", 1)
            )
            if isr >= replicas_ and replicas_ > 1:
                self.f.fail(
                    where, f"min.insync.replicas {isr} leaves no replica to lose of {replicas_}"
                )
        check_topics(
            self.f,
            self.name,
            config,
            declared_partitions={n: t["spec"].get("partitions") for n, t in declared.items()},
            max_bytes={
                n: t["spec"].get("config", {}).get("max.message.bytes") for n, t in declared.items()
            },
            broker_max=broker_config.get("message.max.bytes", KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
        )
        # A topic examflow would create itself gets [kafka] replication_factor replicas;
        # declared here it must get the same, or the two disagree about its durability.
        factor = setting(config, "kafka.replication_factor")
        for topic, (partitions, _) in topic_plan(config).items():
            if factor != -1 and partitions is not None and topic in declared:
                got = declared[topic]["spec"].get("replicas", 1)
                if got != factor:
                    self.f.fail(
                        f"{self.name}: KafkaTopic/{topic}",
                        f"{got} replicas; [kafka] replication_factor = {factor}",
                    )

        attempts = setting(config, "ingest.attempts_topic")
        attempts_partitions = declared.get(attempts, {}).get("spec", {}).get("partitions")
        for doc, *_ in ingests:
            if attempts_partitions is not None and replicas(doc) > attempts_partitions:
                self.f.fail(
                    self.where(doc),
                    f"{replicas(doc)} replicas but topic {attempts} has {attempts_partitions} partitions: the rest would idle",
                )

        connects = {c["metadata"]["name"]: c for c in self.kinds("KafkaConnect", STRIMZI)}
        for connect in connects.values():
            host, port = host_port(connect["spec"]["bootstrapServers"].split(",")[0])
            if host.split(".")[0] != bootstrap or port not in plain_ports:
                self.f.fail(
                    self.where(connect), f"bootstrapServers is not {bootstrap} on a plain listener"
                )
        self.check_connectors(connects)

    def check_connectors(self, connects):
        config = self.config
        mongo = [
            c
            for c in self.kinds("KafkaConnector", STRIMZI)
            if c["spec"].get("class") == "io.debezium.connector.mongodb.MongoDbConnector"
        ]
        if not mongo:
            return
        if setting(config, "cdc.enabled"):
            self.f.fail(
                self.where(self.config_map),
                "Debezium captures MongoDB here but [cdc] enabled is true: every change would be published twice",
            )
        prefix = setting(config, "kafka.topic_prefix")
        database = setting(config, "storage.mongodb_database")
        collection = setting(config, "cdc.collection")
        for connector in mongo:
            where = self.where(connector)
            settings = connector["spec"].get("config", {})
            connect = connects.get(
                connector["metadata"].get("labels", {}).get("strimzi.io/cluster")
            )
            if not connect:
                self.f.fail(where, "its strimzi.io/cluster label names no KafkaConnect")
            elif (
                connect["metadata"].get("annotations", {}).get("strimzi.io/use-connector-resources")
                != "true"
            ):
                self.f.fail(
                    self.where(connect),
                    'KafkaConnectors need the annotation strimzi.io/use-connector-resources: "true"',
                )
            expected = {
                "topic.prefix": prefix,
                "database.include.list": database,
                "collection.include.list": f"{database}.{collection}",
            }
            for key, value in expected.items():
                if str(settings.get(key)) != value:
                    self.f.fail(
                        where, f"{key} is {settings.get(key)!r}; examflow.toml wants {value!r}"
                    )
            if f"{prefix}.{database}.{collection}" != f"{prefix}.exams.score":
                self.f.fail(
                    where,
                    f"Debezium would write {prefix}.{database}.{collection}; examflow reads {prefix}.exams.score",
                )
            uri = str(settings.get("mongodb.connection.string", ""))
            ref = re.fullmatch(r"\$\{secrets:([^/}]+)/([^:}]+):([^}]+)\}", uri)
            if not ref:
                self.f.fail(
                    where,
                    "mongodb.connection.string is not a ${secrets:namespace/name:key} reference",
                )
                continue
            namespace, secret, _ = ref.groups()
            if namespace != connector["metadata"].get("namespace"):
                self.f.fail(
                    where,
                    f"the connection string's Secret is in namespace {namespace}, the connector in {connector['metadata'].get('namespace')}",
                )
            if connect:
                providers = connect["spec"].get("config", {})
                if (
                    "secrets" not in str(providers.get("config.providers", "")).split(",")
                    or providers.get("config.providers.secrets.class")
                    != "io.strimzi.kafka.KubernetesSecretConfigProvider"
                ):
                    self.f.fail(
                        self.where(connect), "no KubernetesSecretConfigProvider named secrets"
                    )
                self.check_secret_access(where, f"{connect['metadata']['name']}-connect", secret)

    def check_secret_access(self, where, account, secret):
        roles = {
            r["metadata"]["name"]
            for r in self.kinds("Role")
            if any(
                "secrets" in rule.get("resources", [])
                and "get" in rule.get("verbs", [])
                and secret in rule.get("resourceNames", [secret])
                for rule in r.get("rules", [])
            )
        }
        bound = any(
            b["roleRef"]["name"] in roles
            and any(
                s.get("kind") == "ServiceAccount" and s.get("name") == account
                for s in b.get("subjects", [])
            )
            for b in self.kinds("RoleBinding")
        )
        if not bound:
            self.f.fail(where, f"no Role lets service account {account} get Secret {secret}")

    # -- MongoDB ------------------------------------------------------------------------

    def check_mongodb(self):
        for db in self.kinds("PerconaServerMongoDB", "psmdb.percona.com/"):
            where = self.where(db)
            sets = db["spec"].get("replsets", [])
            if not sets or any(s.get("size", 0) < 3 or s["size"] % 2 == 0 for s in sets):
                self.f.fail(
                    where,
                    "needs replica sets of an odd size of at least 3 (change streams, majority writes)",
                )
            for user in db["spec"].get("users", []):
                if "password" in user or "passwordSecretRef" not in user:
                    self.f.fail(where, f"user {user.get('name')} without a passwordSecretRef")


def check_topics(findings, where, config, declared_partitions, max_bytes, broker_max):
    """The topics examflow.toml names exist with the partitions and sizes examflow expects."""
    needed_bytes = setting(config, "kafka.max_message_bytes") + RECORD_OVERHEAD_BYTES
    for topic, (partitions, payloads) in topic_plan(config).items():
        if topic not in declared_partitions:
            findings.fail(where, f"topic {topic} (examflow.toml) is not declared")
            continue
        got = declared_partitions[topic]
        if partitions is not None and got != partitions:
            findings.fail(
                where, f"topic {topic} has {got} partitions; [kafka] partitions = {partitions}"
            )
        if payloads:
            limit = max_bytes.get(topic) or broker_max
            if int(limit) < needed_bytes:
                findings.fail(
                    where,
                    f"topic {topic} takes {limit} bytes; examflow produces up to {needed_bytes} "
                    "([kafka] max_message_bytes + 64 KiB)",
                )


def replicas(doc):
    return doc["spec"].get("replicas", 1)


def check_config_text(findings, where, config):
    unknown = set(config) - CONFIG_TABLES
    if unknown:
        findings.fail(where, f"unknown tables in examflow.toml: {sorted(unknown)}")
    flat = flatten(config)
    for key in SECRET_KEYS & set(flat):
        findings.fail(where, f"{key} is a secret: mount it as a file from a Secret instead")
    for key in flat:
        if key.startswith(("storage.lake_options.", "kafka.properties.")) and SECRET_OPTION.search(
            key.rsplit(".", 1)[-1]
        ):
            findings.fail(
                where,
                f"{key} holds a credential: pass it from a Secret "
                "(AWS_* or EXAMFLOW_KAFKA_PROPERTY_* environment)",
            )
    uri = setting(config, "storage.mongodb_uri")
    if uri and "@" in uri:
        findings.fail(
            where, "storage.mongodb_uri holds credentials: use EXAMFLOW_MONGODB_URI from a Secret"
        )


def check_compose(findings, path):
    where = os.path.relpath(path)
    with open(path) as handle:
        compose = yaml.safe_load(handle)
    services = compose.get("services", {})
    config_file = None
    for service in services.values():
        for volume in service.get("volumes", []):
            source, _, rest = volume.partition(":")
            if rest.split(":")[0] == "/etc/examflow/examflow.toml":
                config_file = os.path.join(os.path.dirname(path), source)
    if not config_file:
        findings.fail(where, "no service mounts an examflow.toml")
        return
    with open(config_file, "rb") as handle:
        config = tomllib.load(handle)
    check_config_text(findings, os.path.relpath(config_file), config)

    # The topics service kafka-topics creates: TOPICS="name:partitions ...".
    topics = services.get("kafka-topics", {}).get("environment", {}).get("TOPICS", "")
    declared = dict(entry.split(":") for entry in topics.split())
    broker_env = services.get("kafka", {}).get("environment", {})
    check_topics(
        findings,
        where,
        config,
        declared_partitions={name: int(p) for name, p in declared.items()},
        max_bytes={},
        broker_max=broker_env.get("KAFKA_MESSAGE_MAX_BYTES", KAFKA_DEFAULT_MAX_MESSAGE_BYTES),
    )
    for address in filter(None, setting(config, "kafka.brokers").split(",")):
        host, port = host_port(address)
        if host not in services or f"PLAINTEXT://{host}:{port}" not in str(
            broker_env.get("KAFKA_ADVERTISED_LISTENERS")
        ):
            findings.fail(
                where, f"[kafka] brokers {address} is not the kafka service's advertised listener"
            )
    endpoint = (setting(config, "storage.lake_options") or {}).get("endpoint")
    if endpoint and re.sub(r"^\w+://|:\d+$", "", endpoint) not in services:
        findings.fail(where, f"lake endpoint {endpoint} is no service of the file")
    # Dev login and plain pgwire are only safe on the host's loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                findings.fail(where, f"service {name} publishes {port} beyond the host's loopback")
    if setting(config, "ingest.enabled") and "ingest" in services:
        findings.fail(where, "[ingest] enabled = true beside the ingest service")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rendered", nargs="+", metavar="NAME=RENDERED.yaml")
    parser.add_argument("--compose")
    args = parser.parse_args()
    findings = Findings()
    overlays = {}
    for item in args.rendered:
        name, _, path = item.partition("=")
        overlay = Overlay(name, path, findings)
        overlays[name] = overlay
        overlay.check_no_secrets()
        if not overlay.load_config():
            continue
        ingests = overlay.check_workloads()
        overlay.check_wiring()
        overlay.check_kafka(ingests)
        overlay.check_mongodb()
        refs = sorted(overlay.secret_refs())
        findings.note(name, "Secrets referenced: " + (", ".join(refs) if refs else "none"))
    base, seed = overlays.get("base"), overlays.get("seed")
    if base and seed and base.config is not None and seed.config is not None:
        a, b = flatten(base.config), flatten(seed.config)
        differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} - SEED_MAY_CHANGE
        for key in sorted(differ):
            findings.fail(
                "seed",
                f"examflow.toml differs from the base's at {key} ({a.get(key)!r} vs {b.get(key)!r}); only {sorted(SEED_MAY_CHANGE)} may",
            )
    if args.compose:
        check_compose(findings, args.compose)
    for line in findings.notes:
        print(f"  note  {line}")
    for line in findings.problems:
        print(f"  FAIL  {line}")
    print(
        f"check_resources: {len(findings.problems)} problem(s) in {', '.join(overlays)}"
        + (" and compose" if args.compose else "")
    )
    return 1 if findings.problems else 0


if __name__ == "__main__":
    sys.exit(main())
