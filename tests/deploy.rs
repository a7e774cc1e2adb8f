//! The deployment files under `deploy/` and the guides under `docs/`,
//! checked without a cluster or a Docker engine: the Kubernetes manifests
//! against the Kubernetes JSON schemas (the `kubernetes-validate` package
//! from PyPI), every configuration they ship through the real binary's
//! `--check`, and the ports, probe paths, mounts and shutdown budget of the
//! manifests, the Dockerfile and the compose file against the effective
//! configuration `--check` prints. The troubleshooting guide is held to the
//! error messages in `src/`.
//!
//! Kustomize is rendered here (resources, `configMapGenerator`, JSON6902
//! `patches`: what the kustomizations use; anything else fails loudly), so
//! the tests need no kubectl; where kubectl is installed, its render must
//! agree. Only the schema test needs Python: it uses python3's
//! `kubernetes_validate` when that is the pinned version, or installs the
//! pinned one into a venv under `target/` (PyPI, once), and fails, never
//! skips, when it cannot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::sidecar::binary;

/// The validator, pinned so a new release cannot change what passes.
const KUBERNETES_VALIDATE: &str = "1.37.0";
/// The oldest Kubernetes the manifests are for (native sidecars, the
/// preStop `sleep` action) and the newest the validator knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.37"];
/// bench/results.md: the sidecar's RSS under load and its peak (1 GiB
/// streamed), in MiB.
const MEASURED_LOAD_RSS_MIB: u64 = 16;
const MEASURED_PEAK_RSS_MIB: u64 = 19;
const SIDECAR: &str = "stripe-sidecar";
const KUSTOMIZATIONS: [&str; 2] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/native-sidecar",
];

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let mut documents = Vec::new();
    for dir in KUSTOMIZATIONS {
        for document in kustomize(&repo(dir)).documents {
            let source = format!("{dir}: {}", kind_name(&document));
            documents.push(json!({ "source": source, "document": document }));
        }
    }
    // Every YAML file is also parsed by PyYAML (as kubectl's YAML 1.1
    // parser would read it) and must mean what it means here.
    let files = yaml_files(&repo("deploy"));
    let request = json!({
        "versions": KUBERNETES_VERSIONS,
        "documents": documents,
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    });
    let python = match python_with_kubernetes_validate() {
        Ok(python) => python,
        Err(why) => panic!("cannot validate the Kubernetes manifests: {why}"),
    };
    let output = run_python(python, VALIDATE_PY, &request.to_string());
    let reply: Value = serde_json::from_str(&output)
        .unwrap_or_else(|e| panic!("the validator's reply is not JSON ({e}):\n{output}"));
    let problems: Vec<&str> = reply["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        problems.is_empty(),
        "manifests that Kubernetes {KUBERNETES_VERSIONS:?} would refuse:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        reply["validated"].as_u64(),
        Some((documents.len() * KUBERNETES_VERSIONS.len()) as u64),
        "every document was validated against every version"
    );
    for file in &files {
        let ours = yaml_documents(file);
        let theirs = &reply["parsed"][file.display().to_string()];
        assert_eq!(
            &Value::Array(ours),
            theirs,
            "{} reads differently in YAML 1.1 (PyYAML, kubectl) and YAML 1.2: quote the ambiguous scalars",
            file.display()
        );
    }
}

#[test]
fn every_kubernetes_file_is_used() {
    let mut used = BTreeSet::new();
    for dir in KUSTOMIZATIONS {
        used.extend(kustomize(&repo(dir)).files);
    }
    for file in files_under(&repo("deploy/kubernetes")) {
        let name = file.file_name().unwrap().to_str().unwrap();
        if name == "kustomization.yaml" || name == "README.md" {
            continue;
        }
        assert!(
            used.contains(&file),
            "{} is not used by any kustomization ({KUSTOMIZATIONS:?}): reference it or remove it",
            file.display()
        );
    }
}

#[test]
fn kubernetes_configs_pass_check_with_the_pods_environment() {
    for dir in KUSTOMIZATIONS {
        let pod = Pod::render(dir);
        let config = pod.sidecar_config();
        assert_eq!(
            config["stripe"]["secret_key"].as_str(),
            Some("<redacted>"),
            "{dir}: the Secret's STRIPE_SECRET_KEY reaches stripe.secret_key"
        );
    }
}

#[test]
fn kubernetes_ports_probes_and_shutdown_match_the_config() {
    for dir in KUSTOMIZATIONS {
        let pod = Pod::render(dir);
        let config = pod.sidecar_config();
        let listen = port_of(config["server"]["listen"].as_str().unwrap());
        let admin = port_of(config["server"]["admin_listen"].as_str().unwrap());
        let sidecar = pod.sidecar();

        assert_eq!(named_port(sidecar, &json!("http")), listen, "{dir}: http");
        assert_eq!(named_port(sidecar, &json!("admin")), admin, "{dir}: admin");
        let mut probes = vec![("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")];
        if pod.native {
            // The app starts only once the sidecar is listening.
            probes.push(("startupProbe", "/readyz"));
        }
        for (probe, path) in probes {
            let get = &sidecar[probe]["httpGet"];
            assert_eq!(get["path"], path, "{dir}: {probe} path");
            assert_eq!(
                named_port(sidecar, &get["port"]),
                admin,
                "{dir}: {probe} is on the admin port"
            );
        }
        let annotations = &pod.template["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/port"],
            admin.to_string(),
            "{dir}: Prometheus scrapes the admin port"
        );

        // The Service sends everything to the sidecar, nothing to the admin
        // port or the app.
        let service = pod.find("Service", None);
        let labels = &pod.template["metadata"]["labels"];
        assert_subset(&service["spec"]["selector"], labels, "Service selector");
        assert_subset(
            &pod.deployment["spec"]["selector"]["matchLabels"],
            labels,
            "Deployment selector",
        );
        let ports = service["spec"]["ports"].as_array().unwrap();
        assert!(!ports.is_empty(), "{dir}: the Service has ports");
        for port in ports {
            assert_eq!(
                named_port(sidecar, &port["targetPort"]),
                listen,
                "{dir}: Service port {} targets server.listen",
                port["port"]
            );
        }

        // The app listens on upstream.url, on localhost only.
        let upstream = url::Url::parse(config["upstream"]["url"].as_str().unwrap()).unwrap();
        let app = pod.app();
        let env = literal_env(app);
        assert_eq!(
            env.get("PORT").map(String::as_str),
            Some(
                upstream
                    .port_or_known_default()
                    .unwrap()
                    .to_string()
                    .as_str()
            ),
            "{dir}: the app's PORT is upstream.url's port"
        );
        assert_eq!(
            env.get("HOSTNAME").map(String::as_str),
            upstream.host_str(),
            "{dir}: the app binds upstream.url's host"
        );
        assert!(
            matches!(upstream.host_str(), Some("127.0.0.1" | "localhost")),
            "{dir}: upstream.url is on localhost: {upstream}"
        );
        assert!(
            app.get("ports").is_none(),
            "{dir}: the app declares no ports: it is reachable only through the sidecar"
        );

        // Shutdown: the app outlives the drain; nothing is killed mid-grace.
        let drain = config["server"]["shutdown_drain_seconds"]
            .as_integer()
            .unwrap() as u64;
        let grace = config["server"]["shutdown_grace_seconds"]
            .as_integer()
            .unwrap() as u64;
        let app_stop = app["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("the app has a preStop sleep");
        assert!(
            app_stop >= drain,
            "{dir}: the app's preStop sleep ({app_stop}) covers the sidecar's drain ({drain})"
        );
        let budget = pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap();
        // Native sidecars stop after the app has exited.
        let needed = if pod.native { app_stop } else { 0 } + drain + grace;
        assert!(
            budget > needed,
            "{dir}: terminationGracePeriodSeconds ({budget}) must exceed {needed} \
             (drain {drain} + grace {grace}{})",
            if pod.native {
                " after the app's stop"
            } else {
                ""
            }
        );
    }
}

#[test]
fn kubernetes_pods_are_locked_down_and_sized_from_measured_rss() {
    let uid = dockerfile().user_uid();
    for dir in KUSTOMIZATIONS {
        let pod = Pod::render(dir);
        let pod_security = &pod.spec["securityContext"];
        for container in pod.containers() {
            let name = container["name"].as_str().unwrap();
            let security = &container["securityContext"];
            let setting = |key: &str| {
                let own = &security[key];
                if own.is_null() {
                    pod_security[key].clone()
                } else {
                    own.clone()
                }
            };
            assert_eq!(setting("runAsNonRoot"), true, "{dir} {name}: runAsNonRoot");
            assert_eq!(
                setting("seccompProfile")["type"],
                "RuntimeDefault",
                "{dir} {name}: seccompProfile"
            );
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "{dir} {name}: allowPrivilegeEscalation"
            );
            assert_eq!(
                security["readOnlyRootFilesystem"], true,
                "{dir} {name}: readOnlyRootFilesystem"
            );
            assert!(
                security["capabilities"]["drop"]
                    .as_array()
                    .is_some_and(|drop| drop.contains(&json!("ALL"))),
                "{dir} {name}: drops ALL capabilities"
            );
            if name == SIDECAR {
                assert_eq!(
                    setting("runAsUser").as_u64(),
                    Some(uid),
                    "{dir}: the sidecar runs as the image's USER"
                );
            }
        }
        assert_eq!(
            pod.spec["automountServiceAccountToken"], false,
            "{dir}: no API token"
        );

        let sidecar = pod.sidecar();
        let image = sidecar["image"].as_str().unwrap();
        assert!(
            image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
            "{dir}: the sidecar image is this version: {image}"
        );
        let resources = &sidecar["resources"];
        let request = mebibytes(&resources["requests"]["memory"]);
        let limit = mebibytes(&resources["limits"]["memory"]);
        assert!(
            request >= MEASURED_LOAD_RSS_MIB as f64,
            "{dir}: memory request {request} MiB covers the measured {MEASURED_LOAD_RSS_MIB} MiB under load"
        );
        assert!(
            limit >= 2.0 * MEASURED_PEAK_RSS_MIB as f64 && limit >= request,
            "{dir}: memory limit {limit} MiB leaves room over the measured {MEASURED_PEAK_RSS_MIB} MiB peak"
        );
        assert!(
            resources["requests"]["cpu"].is_string(),
            "{dir}: a CPU request"
        );
    }
}

/// Where kubectl is installed, its kustomize must render what this file's
/// renderer does (generated names aside: kubectl adds a content hash).
#[test]
fn kustomize_renderer_agrees_with_kubectl_atinstalled() {
    let Ok(version) = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl is not installed: the renderer is not cross-checked");
        return;
    };
    assert!(version.status.success(), "kubectl version: {version:?}");
    for dir in KUSTOMIZATIONS {
        let output = Command::new("kubectl")
            .arg("kustomize")
            .arg(repo(dir))
            .output()
            .expect("kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize {dir}: {output:?}"
        );
        let mut text = String::from_utf8(output.stdout).unwrap();
        let ours = kustomize(&repo(dir)).documents;
        for generated in ours.iter().filter(|d| d["kind"] == "ConfigMap") {
            let name = generated["metadata"]["name"].as_str().unwrap();
            let hashed = text
                .split("name: ")
                .filter_map(|rest| rest.split_whitespace().next())
                .find(|word| word.starts_with(&format!("{name}-")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("{dir}: kubectl generated no {name}-<hash>"));
            text = text.replace(&hashed, name);
        }
        let theirs = YamlLoader::load_from_str(&text)
            .unwrap()
            .into_iter()
            .map(|doc| to_json(doc, "kubectl output"))
            .collect::<Vec<_>>();
        let by_name = |docs: &[Value]| -> BTreeMap<String, Value> {
            docs.iter().map(|d| (kind_name(d), d.clone())).collect()
        };
        assert_eq!(
            by_name(&ours),
            by_name(&theirs),
            "{dir}: kubectl renders otherwise"
        );
    }
}

/// One rendered kustomization's pod: the Deployment and what it refers to.
struct Pod {
    dir: &'static str,
    documents: Vec<Value>,
    deployment: Value,
    template: Value,
    spec: Value,
    /// The sidecar is an init container with `restartPolicy: Always`.
    native: bool,
}

impl Pod {
    fn render(dir: &'static str) -> Pod {
        let documents = kustomize(&repo(dir)).documents;
        let deployments: Vec<&Value> = documents
            .iter()
            .filter(|d| d["kind"] == "Deployment")
            .collect();
        assert_eq!(deployments.len(), 1, "{dir}: one Deployment");
        let deployment = deployments[0].clone();
        let template = deployment["spec"]["template"].clone();
        let spec = template["spec"].clone();
        let native = spec["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == SIDECAR && c["restartPolicy"] == "Always");
        Pod {
            dir,
            documents,
            deployment,
            template,
            spec,
            native,
        }
    }

    /// The one document of `kind` (named `name`, when given).
    fn find(&self, kind: &str, name: Option<&str>) -> &Value {
        let found: Vec<&Value> = self
            .documents
            .iter()
            .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: one {kind} {name:?} in the render",
            self.dir
        );
        found[0]
    }

    fn containers(&self) -> Vec<&Value> {
        let list = |key: &str| self.spec[key].as_array().into_iter().flatten();
        list("initContainers").chain(list("containers")).collect()
    }

    fn sidecar(&self) -> &Value {
        let key = if self.native {
            "initContainers"
        } else {
            "containers"
        };
        let found = self.spec[key]
            .as_array()
            .and_then(|list| list.iter().find(|c| c["name"] == SIDECAR));
        found.unwrap_or_else(|| panic!("{}: no {SIDECAR} container in {key}", self.dir))
    }

    fn app(&self) -> &Value {
        let apps: Vec<&Value> = self.spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] != SIDECAR)
            .collect();
        assert_eq!(apps.len(), 1, "{}: one app container", self.dir);
        apps[0]
    }

    /// The sidecar's environment as Kubernetes would build it.
    fn sidecar_env(&self) -> BTreeMap<String, String> {
        let sidecar = self.sidecar();
        assert!(
            sidecar.get("envFrom").is_none(),
            "{}: envFrom is not resolved here; list the variables in env",
            self.dir
        );
        let mut env = BTreeMap::new();
        for var in sidecar["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_string();
            if let Some(value) = var["value"].as_str() {
                assert!(!value.contains("$("), "{}: {name} uses $(...)", self.dir);
                env.insert(name, value.to_string());
                continue;
            }
            let reference = &var["valueFrom"]["secretKeyRef"];
            assert!(
                reference.is_object(),
                "{}: {name}: only value and secretKeyRef are resolved here",
                self.dir
            );
            let secret = self.find("Secret", reference["name"].as_str());
            let key = reference["key"].as_str().unwrap();
            match secret_value(secret, key) {
                Some(value) => {
                    env.insert(name, value);
                }
                None => assert_eq!(
                    reference["optional"], true,
                    "{}: {name}: the Secret has no key {key} and the reference is not optional",
                    self.dir
                ),
            }
        }
        env
    }

    /// The config.toml the sidecar reads: from the ConfigMap mounted where
    /// STRIPE_SIDECAR_CONFIG (or the image's default) points.
    fn sidecar_config_text(&self) -> String {
        let sidecar = self.sidecar();
        let path = self
            .sidecar_env()
            .remove("STRIPE_SIDECAR_CONFIG")
            .unwrap_or_else(|| dockerfile().config_path());
        let (dir, file) = path.rsplit_once('/').unwrap();
        let mounts = sidecar["volumeMounts"].as_array().unwrap();
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {dir} for {path}", self.dir));
        assert!(
            mount.get("subPath").is_none(),
            "{}: subPath mounts do not see ConfigMap updates",
            self.dir
        );
        let volume = self.spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{}: no volume {}", self.dir, mount["name"]));
        assert!(
            volume["configMap"]["items"].is_null(),
            "{}: configMap items are not resolved here",
            self.dir
        );
        let map = self.find("ConfigMap", volume["configMap"]["name"].as_str());
        map["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("{}: the ConfigMap has no {file}", self.dir))
            .to_string()
    }

    /// The effective configuration `--check` prints for the sidecar, in
    /// the pod's environment.
    fn sidecar_config(&self) -> toml::Table {
        check(
            &self.sidecar_config_text(),
            &self.sidecar_env(),
            &format!("{}: the ConfigMap's config.toml", self.dir),
        )
    }
}

fn secret_value(secret: &Value, key: &str) -> Option<String> {
    if let Some(value) = secret["stringData"][key].as_str() {
        return Some(value.to_string());
    }
    let encoded = secret["data"][key].as_str()?;
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("Secret data is base64");
    Some(String::from_utf8(bytes).expect("UTF-8 secret"))
}

/// A container port by number or by name.
fn named_port(container: &Value, port: &Value) -> u16 {
    if let Some(number) = port.as_u64() {
        return number as u16;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{} has no port named {name}", container["name"])) as u16
}

fn literal_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?.into(), v["value"].as_str()?.into())))
        .collect()
}

fn assert_subset(part: &Value, whole: &Value, what: &str) {
    let part = part
        .as_object()
        .unwrap_or_else(|| panic!("{what} is a map"));
    assert!(!part.is_empty(), "{what} selects something");
    for (key, value) in part {
        assert_eq!(&whole[key], value, "{what}: {key} is a pod label");
    }
}

/// A memory quantity in MiB.
fn mebibytes(quantity: &Value) -> f64 {
    let text = quantity.as_str().expect("a memory quantity");
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().expect("a number");
    let factor = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        other => panic!("unexpected unit {other} in {text}"),
    };
    number * factor / (1024.0 * 1024.0)
}

fn kind_name(document: &Value) -> String {
    format!(
        "{} {}",
        document["kind"].as_str().unwrap_or("?"),
        document["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// ---------------------------------------------------------------------------
// Kustomize, as far as these kustomizations use it
// ---------------------------------------------------------------------------

struct Rendered {
    documents: Vec<Value>,
    /// Every file the render read but the kustomization.yaml files.
    files: BTreeSet<PathBuf>,
}

fn kustomize(dir: &Path) -> Rendered {
    let path = dir.join("kustomization.yaml");
    let mut documents = yaml_documents(&path);
    assert_eq!(documents.len(), 1, "{}: one document", path.display());
    let kustomization = documents.remove(0);
    let at = path.display().to_string();
    assert_eq!(
        kustomization["apiVersion"], "kustomize.config.k8s.io/v1beta1",
        "{at}"
    );
    assert_eq!(kustomization["kind"], "Kustomization", "{at}");
    for key in kustomization.as_object().unwrap().keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "configMapGenerator",
                "patches"
            ]
            .contains(&key.as_str()),
            "{at}: `{key}` is not rendered by tests/deploy.rs: implement it there"
        );
    }
    let list = |key: &str| kustomization[key].as_array().cloned().unwrap_or_default();
    let mut rendered = Rendered {
        documents: Vec::new(),
        files: BTreeSet::new(),
    };
    for resource in list("resources") {
        let path = dir.join(resource.as_str().unwrap());
        if path.is_dir() {
            let base = kustomize(&path);
            rendered.documents.extend(base.documents);
            rendered.files.extend(base.files);
        } else {
            rendered.documents.extend(yaml_documents(&path));
            rendered.files.insert(clean(&path));
        }
    }
    for generator in list("configMapGenerator") {
        for key in generator.as_object().unwrap().keys() {
            assert!(
                ["name", "files"].contains(&key.as_str()),
                "{at}: configMapGenerator `{key}` is not rendered here"
            );
        }
        let mut data = serde_json::Map::new();
        for file in generator["files"].as_array().unwrap() {
            let file = file.as_str().unwrap();
            let (key, file) = file
                .split_once('=')
                .unwrap_or((Path::new(file).file_name().unwrap().to_str().unwrap(), file));
            let path = dir.join(file);
            data.insert(key.to_string(), read(&path).into());
            rendered.files.insert(clean(&path));
        }
        rendered.documents.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": generator["name"] },
            "data": data,
        }));
    }
    for patch in list("patches") {
        let path = dir.join(patch["path"].as_str().expect("patches[].path"));
        let target = &patch["target"];
        for key in target.as_object().unwrap().keys() {
            assert!(
                ["kind", "name"].contains(&key.as_str()),
                "{at}: patch target `{key}` is not rendered here"
            );
        }
        let ops = yaml_documents(&path).remove(0);
        let mut matched = 0;
        for document in &mut rendered.documents {
            if document["kind"] == target["kind"] && document["metadata"]["name"] == target["name"]
            {
                json_patch(document, &ops, &path.display().to_string());
                matched += 1;
            }
        }
        assert_eq!(
            matched,
            1,
            "{at}: the patch {} targets one document",
            path.display()
        );
        rendered.files.insert(clean(&path));
    }
    rendered
}

/// RFC 6902, the operations a patch here may use.
fn json_patch(document: &mut Value, ops: &Value, source: &str) {
    for op in ops.as_array().expect("a JSON patch is a list") {
        let path = op["path"].as_str().expect("op.path");
        match op["op"].as_str().expect("op.op") {
            "test" => assert_eq!(
                document.pointer(path),
                Some(&op["value"]),
                "{source}: test {path}"
            ),
            "add" => pointer_add(document, path, op["value"].clone(), source),
            "replace" => {
                *document
                    .pointer_mut(path)
                    .unwrap_or_else(|| panic!("{source}: replace {path}: no such value")) =
                    op["value"].clone()
            }
            "remove" => {
                pointer_remove(document, path, source);
            }
            "move" => {
                let from = op["from"].as_str().expect("op.from");
                let value = pointer_remove(document, from, source);
                pointer_add(document, path, value, source);
            }
            other => panic!("{source}: op {other} is not applied by tests/deploy.rs"),
        }
    }
}

fn split_pointer<'a>(path: &'a str, source: &str) -> (&'a str, String) {
    let (parent, last) = path
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{source}: not a JSON pointer: {path}"));
    (parent, last.replace("~1", "/").replace("~0", "~"))
}

fn pointer_add(document: &mut Value, path: &str, value: Value, source: &str) {
    let (parent, last) = split_pointer(path, source);
    match document.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
        }
        Some(Value::Array(list)) if last == "-" => list.push(value),
        Some(Value::Array(list)) => {
            let index: usize = last.parse().expect("an array index");
            assert!(index <= list.len(), "{source}: add {path}: out of range");
            list.insert(index, value);
        }
        _ => panic!("{source}: add {path}: no parent"),
    }
}

fn pointer_remove(document: &mut Value, path: &str, source: &str) -> Value {
    let (parent, last) = split_pointer(path, source);
    let removed = match document.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last),
        Some(Value::Array(list)) => {
            let index: usize = last.parse().expect("an array index");
            (index < list.len()).then(|| list.remove(index))
        }
        _ => None,
    };
    removed.unwrap_or_else(|| panic!("{source}: remove {path}: no such value"))
}

// ---------------------------------------------------------------------------
// The container image
// ---------------------------------------------------------------------------

/// deploy/Dockerfile, as instructions per stage.
struct Dockerfile {
    stages: Vec<Stage>,
}

struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

fn dockerfile() -> Dockerfile {
    let text = read(&repo("deploy/Dockerfile"));
    // Comment lines go first (they may sit inside a continued RUN), then
    // continuations are joined.
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    lines.push(current.trim().to_string());
                }
                current.clear();
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in lines {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_string());
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("deploy/Dockerfile: FROM {rest}"),
            };
            stages.push(Stage {
                from: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("deploy/Dockerfile starts with FROM")
                .instructions
                .push((keyword, rest));
        }
    }
    Dockerfile { stages }
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let all = self.all(keyword);
        assert_eq!(
            all.len(),
            1,
            "deploy/Dockerfile: one {keyword} in the final stage"
        );
        all[0]
    }

    /// `(--from stage, sources, destination)` of every COPY.
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .into_iter()
            .map(|rest| {
                let mut from = None;
                let mut words = Vec::new();
                for word in rest.split_whitespace() {
                    match word.strip_prefix("--from=") {
                        Some(stage) => from = Some(stage.to_string()),
                        None if word.starts_with("--") => {}
                        None => words.push(word.to_string()),
                    }
                }
                let destination = words.pop().expect("COPY destination");
                (from, words, destination)
            })
            .collect()
    }
}

impl Dockerfile {
    fn last(&self) -> &Stage {
        self.stages.last().expect("a stage")
    }

    /// The final stage's `ENV KEY=value`s.
    fn env(&self) -> BTreeMap<String, String> {
        self.last()
            .all("ENV")
            .into_iter()
            .map(|rest| {
                let (key, value) = rest
                    .split_once('=')
                    .expect("ENV KEY=value (the old `ENV KEY value` form is ambiguous)");
                (key.to_string(), value.trim_matches('"').to_string())
            })
            .collect()
    }

    fn config_path(&self) -> String {
        self.env()
            .remove("STRIPE_SIDECAR_CONFIG")
            .expect("deploy/Dockerfile sets ENV STRIPE_SIDECAR_CONFIG")
    }

    fn user_uid(&self) -> u64 {
        let user = self.last().one("USER");
        let uid = user.split(':').next().unwrap();
        let uid: u64 = uid
            .parse()
            .unwrap_or_else(|_| panic!("USER {user}: numeric, so runAsNonRoot can check it"));
        assert_ne!(uid, 0, "USER {user}: not root");
        uid
    }
}

#[test]
fn dockerfile_builds_a_static_nonroot_image_with_its_default_config() {
    let dockerfile = dockerfile();
    assert!(dockerfile.stages.len() >= 2, "a multi-stage build");
    let build_stages = &dockerfile.stages[..dockerfile.stages.len() - 1];
    let build_runs: String = build_stages
        .iter()
        .flat_map(|s| s.all("RUN"))
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "x86_64-unknown-linux-musl",
        "--target \"$(cat /rust-target)\"",
        "musl-tools",
        "--locked",
        "--release",
    ] {
        assert!(build_runs.contains(needed), "the build stage runs {needed}");
    }
    let last = dockerfile.last();
    assert!(
        last.from == "scratch" || last.from.starts_with("gcr.io/distroless/static"),
        "the image runs from scratch or distroless static, not {}",
        last.from
    );
    assert!(
        last.all("RUN").is_empty(),
        "nothing runs in the final stage"
    );

    // Only the binary and the default config, where the rest expects them.
    let copies = last.copies();
    assert_eq!(
        copies.len(),
        2,
        "the final stage copies the binary and the config"
    );
    let (from, sources, binary_path) = &copies[0];
    let build_names: Vec<&str> = build_stages
        .iter()
        .filter_map(|s| s.name.as_deref())
        .collect();
    assert!(
        from.as_deref().is_some_and(|f| build_names.contains(&f)),
        "the binary comes from the build stage"
    );
    assert!(
        build_runs.contains(&format!(" {}", sources[0])),
        "the build stage puts the binary at {}",
        sources[0]
    );
    let (from, sources, config_path) = &copies[1];
    assert_eq!(
        (from, sources.as_slice()),
        (&None, &["deploy/config.toml".to_string()][..])
    );
    assert_eq!(
        &dockerfile.config_path(),
        config_path,
        "STRIPE_SIDECAR_CONFIG names the copied config"
    );
    let entrypoint: Vec<String> = serde_json::from_str(last.one("ENTRYPOINT"))
        .expect("ENTRYPOINT in exec form (no shell in the image)");
    assert_eq!(&entrypoint[0], binary_path, "ENTRYPOINT runs the binary");
    dockerfile.user_uid();

    // The default config passes --check with the image's ENV and the
    // variables it requires, and the image EXPOSEs its ports.
    let text = read(&repo("deploy/config.toml"));
    let mut env = dockerfile.env();
    env.extend(dummies(&text));
    let config = check(&text, &env, "deploy/config.toml");
    let exposed: BTreeSet<u16> = last
        .all("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| port.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    let wanted: BTreeSet<u16> = ["listen", "admin_listen"]
        .iter()
        .map(|key| port_of(config["server"][key].as_str().unwrap()))
        .collect();
    assert_eq!(exposed, wanted, "EXPOSE the config's two ports");
}

#[test]
fn dockerignore_keeps_what_the_dockerfile_copies() {
    let text = read(&repo(".dockerignore"));
    let mut patterns = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    assert_eq!(
        patterns.next(),
        Some("*"),
        ".dockerignore starts by excluding everything"
    );
    let kept: Vec<&str> = patterns
        .map(|p| {
            p.strip_prefix('!')
                .expect("after `*`, only !exceptions")
                .trim_end_matches('/')
        })
        .collect();
    for stage in dockerfile().stages {
        for (from, sources, _) in stage.copies() {
            if from.is_some() {
                continue;
            }
            for source in sources {
                let source = source.trim_end_matches('/');
                assert!(
                    kept.iter()
                        .any(|k| source == *k || source.starts_with(&format!("{k}/"))),
                    ".dockerignore keeps {source} out of the build context"
                );
                assert!(repo(source).exists(), "COPY {source}: no such file");
            }
        }
    }
}

/// Plausible values for the variables a config requires (`${VAR}` with
/// no default).
fn dummies(config: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for reference in config.split("${").skip(1) {
        let reference = &reference[..reference.find('}').unwrap()];
        if reference.contains(":-") {
            continue;
        }
        let value = match reference {
            "APP_ORIGIN" => "https://myapp.example.com",
            "STRIPE_SECRET_KEY" => "sk_test_dummy",
            "STRIPE_WEBHOOK_SECRET" => "whsec_dummy",
            "SUPABASE_JWT_SECRET" => "dummy-jwt-secret",
            other => panic!("no plausible dummy for ${{{other}}}: add one in tests/deploy.rs"),
        };
        env.insert(reference.to_string(), value.to_string());
    }
    env
}

// ---------------------------------------------------------------------------
// docker compose
// ---------------------------------------------------------------------------

#[test]
fn compose_runs_the_sidecar_in_front_of_the_app_against_stripe_mock() {
    let compose_file = repo("deploy/docker-compose.yml");
    let compose = yaml_documents(&compose_file).remove(0);
    let services = compose["services"].as_object().expect("services");
    let deploy = repo("deploy");

    let (name, sidecar) = services
        .iter()
        .find(|(_, s)| s["build"]["dockerfile"].is_string())
        .expect("a service built from a Dockerfile");
    let context = deploy.join(sidecar["build"]["context"].as_str().unwrap());
    assert_eq!(
        clean(&context),
        repo("."),
        "{name} builds from the repository root"
    );
    assert_eq!(
        clean(&context.join(sidecar["build"]["dockerfile"].as_str().unwrap())),
        repo("deploy/Dockerfile")
    );
    let image = sidecar["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image}"
    );

    let env = compose_env(&sidecar["environment"]);
    let config_path = env
        .get("STRIPE_SIDECAR_CONFIG")
        .cloned()
        .unwrap_or_else(|| dockerfile().config_path());
    let host_config = compose_mounts(sidecar)
        .into_iter()
        .find(|(_, target)| *target == config_path)
        .map(|(host, _)| deploy.join(host))
        .unwrap_or_else(|| panic!("{name}: nothing is mounted at {config_path}"));
    let config = check(&read(&host_config), &env, "deploy/compose/config.toml");

    let listen = port_of(config["server"]["listen"].as_str().unwrap());
    let admin = port_of(config["server"]["admin_listen"].as_str().unwrap());
    let published: Vec<(Option<String>, u16, u16)> = sidecar["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let parts: Vec<&str> = p
                .as_str()
                .expect("\"HOST:CONTAINER\" ports")
                .split(':')
                .collect();
            match parts.as_slice() {
                [host, container] => (None, host.parse().unwrap(), container.parse().unwrap()),
                [ip, host, container] => (
                    Some(ip.to_string()),
                    host.parse().unwrap(),
                    container.parse().unwrap(),
                ),
                _ => panic!("ports: {p}"),
            }
        })
        .collect();
    let app_port = published
        .iter()
        .find(|(_, _, container)| *container == listen)
        .map(|(_, host, _)| *host)
        .unwrap_or_else(|| panic!("{name}: server.listen ({listen}) is published"));
    for (ip, _, container) in &published {
        assert!(
            [listen, admin].contains(container),
            "{name} publishes {container}, which the sidecar does not listen on"
        );
        if *container == admin {
            assert_eq!(
                ip.as_deref(),
                Some("127.0.0.1"),
                "metrics stay on this machine"
            );
        }
    }
    let origins = config["checkout"]["allowed_redirect_origins"]
        .as_array()
        .unwrap();
    assert!(
        origins.contains(&toml::Value::from(format!("http://localhost:{app_port}"))),
        "the demo page's origin is allowed: {origins:?}"
    );

    // Stripe is stripe-mock, on its HTTP port.
    let api_base = url::Url::parse(config["stripe"]["api_base"].as_str().unwrap()).unwrap();
    let mock = &services[api_base.host_str().unwrap()];
    assert!(
        mock["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("stripe/stripe-mock")),
        "stripe.api_base is the stripe-mock service: {api_base}"
    );
    assert_eq!(api_base.scheme(), "http");
    assert_eq!(
        api_base.port(),
        Some(12111),
        "stripe-mock serves HTTP on 12111"
    );

    // The app is the upstream, not published, and signs what the sidecar
    // verifies.
    let upstream = url::Url::parse(config["upstream"]["url"].as_str().unwrap()).unwrap();
    let app_name = upstream.host_str().unwrap();
    let app = &services[app_name];
    assert!(app.is_object(), "upstream.url is a service: {upstream}");
    assert!(
        app.get("ports").is_none(),
        "{app_name} is reachable only through the sidecar"
    );
    let app_env = compose_env(&app["environment"]);
    assert_eq!(
        app_env.get("PORT").map(String::as_str),
        Some(upstream.port().unwrap().to_string().as_str()),
        "{app_name} listens on upstream.url's port"
    );
    for shared in ["SUPABASE_JWT_SECRET", "STRIPE_WEBHOOK_SECRET"] {
        assert_eq!(
            app_env.get(shared),
            env.get(shared),
            "{shared} is the same for both"
        );
    }
    let script = app["command"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    let on_host = compose_mounts(app)
        .into_iter()
        .find_map(|(host, target)| {
            script
                .strip_prefix(&format!("{target}/"))
                .map(|rest| deploy.join(host).join(rest))
        })
        .unwrap_or_else(|| panic!("{app_name}: {script} is not mounted"));
    assert!(on_host.is_file(), "{} exists", on_host.display());
    let depends = sidecar["depends_on"].as_array().unwrap();
    for needed in [app_name, api_base.host_str().unwrap()] {
        assert!(
            depends.contains(&json!(needed)),
            "{name} depends on {needed}"
        );
    }
}

fn compose_env(environment: &Value) -> BTreeMap<String, String> {
    let env: BTreeMap<String, String> = match environment {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("quoted values").to_string()))
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let (k, v) = item.as_str().unwrap().split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    for (key, value) in &env {
        assert!(
            !value.contains('$'),
            "{key}: compose would interpolate {value:?}"
        );
    }
    env
}

/// `(host path, container path)` of a service's bind mounts.
fn compose_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The guides
// ---------------------------------------------------------------------------

/// Every message a reply's `error` can carry, found in `src/`, is in
/// docs/troubleshooting.md (the parts around `{placeholders}`).
#[test]
fn troubleshooting_lists_every_error_message() {
    let guide = read(&repo("docs/troubleshooting.md"));
    let mut messages = Vec::new();
    for file in files_under(&repo("src")) {
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for message in error_messages(&file) {
            messages.push((file.display().to_string(), message));
        }
    }
    for needed in [
        "Billing is not configured",
        "Price ID is required",
        "Not signed in",
        "{field} must be a valid URI",
    ] {
        assert!(
            messages.iter().any(|(_, m)| m == needed),
            "the message scan finds {needed:?}: has src/ changed shape?"
        );
    }
    let missing: Vec<String> = messages
        .into_iter()
        .filter(|(_, message)| {
            let mut parts = message.split(['{', '}']).step_by(2);
            !parts.all(|part| part.trim().len() <= 2 || guide.contains(part))
        })
        .map(|(file, message)| format!("{message:?} ({file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not mention these messages; add each with its cause and fix:\n{}",
        missing.join("\n")
    );
}

/// The messages of `file` that become a reply's `error`: the literal
/// argument of every `BadRequest(...)` and `bad(...)`, and in src/error.rs
/// (the one place errors become replies) every literal of more than one
/// word: the replies and the log lines that explain them. Unit tests and
/// comments are skipped.
fn error_messages(file: &Path) -> Vec<String> {
    let text = read(file);
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for marker in ["BadRequest(", "bad("] {
        for (at, _) in code.match_indices(marker) {
            let after = code[at + marker.len()..].trim_start();
            let after = after.strip_prefix("format!(").unwrap_or(after).trim_start();
            found.extend(string_literal(after).map(|(literal, _)| literal));
        }
    }
    if file.ends_with("src/error.rs") {
        let mut rest = code.as_str();
        while let Some(at) = rest.find('"') {
            let Some((literal, length)) = string_literal(&rest[at..]) else {
                break;
            };
            rest = &rest[at + length..];
            if literal.contains(' ') {
                found.push(literal);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The string literal `text` starts with, unescaped (no raw strings), and
/// its length in `text`.
fn string_literal(text: &str) -> Option<(String, usize)> {
    let mut chars = text.strip_prefix('"')?.char_indices().peekable();
    let mut out = String::new();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, at + 2)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                '\n' => while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {},
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[test]
fn guide_links_resolve() {
    let mut pages = files_under(&repo("docs"));
    pages.extend(files_under(&repo("deploy")));
    let pages: Vec<PathBuf> = pages
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert!(pages.len() >= 7, "the guides are there: {pages:?}");
    for page in pages {
        let text = read(&page);
        for link in text.split("](").skip(1) {
            let target = &link[..link.find(')').unwrap_or(link.len())];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(file);
            assert!(
                resolved.exists(),
                "{}: the link {target} leads nowhere",
                page.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Running the binary's --check
// ---------------------------------------------------------------------------

/// Runs `stripe-sidecar --check` on `config` with exactly `env` (nothing
/// from this machine's environment) and returns the effective
/// configuration it prints.
fn check(config: &str, env: &BTreeMap<String, String>, what: &str) -> toml::Table {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(binary())
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env)
        .output()
        .expect("run stripe-sidecar --check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} fails stripe-sidecar --check with {:?}:\n{stderr}",
        env.keys().collect::<Vec<_>>()
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("--check printed no TOML ({e}):\n{stdout}"))
}

fn port_of(address: &str) -> u16 {
    address
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|_| panic!("not an address: {address}"))
        .port()
}

// ---------------------------------------------------------------------------
// kubernetes-validate, installed on demand
// ---------------------------------------------------------------------------

/// Validates the documents against each version's strict schemas (unknown
/// fields are errors; a kind without a schema is an error too, where the
/// CLI only warns) and returns each file parsed by PyYAML.
const VALIDATE_PY: &str = r#"
import json, sys, yaml
from kubernetes_validate import utils

request = json.load(sys.stdin)
problems, validated, parsed = [], 0, {}
for item in request["documents"]:
    for version in request["versions"]:
        try:
            utils.validate(item["document"], version, strict=True)
            validated += 1
        except utils.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top level)"
            problems.append("%s: %s: %s (Kubernetes %s)" % (item["source"], where, e.message, version))
        except (utils.SchemaNotFoundError, utils.InvalidSchemaError, utils.VersionNotSupportedError) as e:
            problems.append("%s: %s" % (item["source"], e.message))
for path in request["files"]:
    with open(path) as f:
        parsed[path] = [d for d in yaml.safe_load_all(f) if d is not None]
json.dump({"problems": problems, "validated": validated, "parsed": parsed}, sys.stdout, default=str)
"#;

const IMPORTABLE_PY: &str = r#"
import importlib.metadata, kubernetes_validate
print(importlib.metadata.version("kubernetes-validate"))
"#;

/// A Python that imports the pinned `kubernetes_validate`: python3 when it
/// has it, else the venv target/kubernetes-validate-venv, installed on
/// first use.
fn python_with_kubernetes_validate() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        // Another version could pass or refuse other manifests.
        if importable(Path::new("python3")).as_deref() == Some(KUBERNETES_VALIDATE) {
            return Ok("python3".into());
        }
        // The target directory: the test binary is in <target>/debug/deps.
        let target = binary()
            .ancestors()
            .nth(2)
            .expect("the binary is under the target directory")
            .to_path_buf();
        let venv = target.join("kubernetes-validate-venv");
        let python = venv.join("bin/python");
        if importable(&python).as_deref() == Some(KUBERNETES_VALIDATE) {
            return Ok(python);
        }
        install(&venv)?;
        match importable(&python) {
            Some(version) if version == KUBERNETES_VALIDATE => Ok(python),
            other => Err(format!(
                "{} has kubernetes-validate {other:?} after installing {KUBERNETES_VALIDATE}",
                venv.display()
            )),
        }
    })
}

/// The kubernetes-validate version `python` imports, if it does.
fn importable(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args(["-c", IMPORTABLE_PY])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Installs the pinned kubernetes-validate into a new venv at `venv`. It is
/// built beside it and renamed into place, so a concurrent run (another
/// test process) never sees half a venv; a venv runs from its new path
/// because `python -m`/`-c` is all that is used of it.
fn install(venv: &Path) -> Result<(), String> {
    let building = venv.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let step = |what: &str, command: &mut Command| -> Result<(), String> {
        let output = command
            .output()
            .map_err(|e| format!("{what}: cannot run {command:?}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    };
    eprintln!(
        "installing kubernetes-validate {KUBERNETES_VALIDATE} into {}",
        venv.display()
    );
    let installed = step(
        "python3 -m venv (on Debian: apt-get install python3-venv)",
        Command::new("python3").arg("-m").arg("venv").arg(&building),
    )
    .and_then(|()| {
        step(
            "pip install kubernetes-validate (needs PyPI)",
            Command::new(building.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("kubernetes-validate=={KUBERNETES_VALIDATE}"),
            ]),
        )
    });
    if let Err(why) = installed {
        let _ = std::fs::remove_dir_all(&building);
        return Err(why);
    }
    // A concurrent run may have finished first: keep its venv. Replace
    // only a broken one or one of another version.
    let python = venv.join("bin/python");
    if importable(&python).as_deref() == Some(KUBERNETES_VALIDATE) {
        let _ = std::fs::remove_dir_all(&building);
        return Ok(());
    }
    if venv.exists() {
        let _ = std::fs::remove_dir_all(venv);
    }
    if let Err(error) = std::fs::rename(&building, venv) {
        let _ = std::fs::remove_dir_all(&building);
        if !venv.exists() {
            return Err(format!(
                "cannot move the venv into {}: {error}",
                venv.display()
            ));
        }
    }
    Ok(())
}

fn run_python(python: &Path, script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

// ---------------------------------------------------------------------------
// Files and YAML
// ---------------------------------------------------------------------------

fn repo(relative: &str) -> PathBuf {
    clean(&Path::new(env!("CARGO_MANIFEST_DIR")).join(relative))
}

/// `path` with `.` and `..` resolved (without touching the file system).
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect()
}

/// The non-empty documents of a YAML file, as JSON.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let at = path.display().to_string();
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"))
        .into_iter()
        .filter(|doc| !matches!(doc, Yaml::Null))
        .map(|doc| to_json(doc, &at))
        .collect()
}

fn to_json(yaml: Yaml, source: &str) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => b.into(),
        Yaml::Integer(i) => i.into(),
        Yaml::Real(text) => {
            let number: f64 = text.parse().unwrap_or_else(|_| panic!("{source}: {text}"));
            number.into()
        }
        Yaml::String(s) => s.into(),
        Yaml::Array(items) => items.into_iter().map(|i| to_json(i, source)).collect(),
        Yaml::Hash(map) => map
            .into_iter()
            .map(|(key, value)| {
                let key = match key {
                    Yaml::String(s) => s,
                    other => panic!("{source}: a non-string key {other:?}"),
                };
                (key, to_json(value, source))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{source}: aliases are not read here"),
    }
}
