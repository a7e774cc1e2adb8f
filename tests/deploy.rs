//! The deployment files under `deploy/` and the guides under `docs/`, read
//! as plain files (no cluster, no Docker engine, no kustomize): every
//! configuration the repository ships passes the real binary's `--check`,
//! and the ports, probe paths, config path and shutdown budget of the
//! Kubernetes manifests, the native-sidecar overlay's patch, the compose
//! file and the Dockerfile agree with the effective configuration `--check`
//! prints. The troubleshooting guide is held to the error messages in
//! `src/`.
//!
//! Rendering the kustomizations and validating the result against the
//! Kubernetes schemas needs more than Rust, so it is not here but in
//! `.ci/validate-manifests`, which `.ci/run` runs after the tests.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::sidecar::binary;
use crate::support::toml_strings;

const SIDECAR: &str = "stripe-sidecar";
const BASE: &str = "deploy/kubernetes/base";
const OVERLAY: &str = "deploy/kubernetes/overlays/native-sidecar";
const REDIS_OVERLAY: &str = "deploy/kubernetes/overlays/redis";
/// Docker's `stop_grace_period` when a compose service sets none.
const COMPOSE_DEFAULT_STOP_SECONDS: u64 = 10;

// ---------------------------------------------------------------------------
// Every shipped configuration
// ---------------------------------------------------------------------------

#[test]
fn every_shipped_config_passes_check() {
    let configs: Vec<PathBuf> = files_under(&repo("."))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        // Test inputs, not shipped: the tests' own and the fuzz corpora.
        .filter(|p| !p.starts_with(repo("tests")) && !p.starts_with(repo("fuzz")))
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !["Cargo.toml", "clippy.toml", "rustfmt.toml", ".rustfmt.toml"].contains(&name)
        })
        .collect();
    for known in [
        "config.toml",
        "deploy/config.toml",
        "deploy/compose/config.toml",
        "deploy/kubernetes/base/config.toml",
    ] {
        assert!(
            configs.contains(&repo(known)),
            "{known} is found among the shipped configs: {configs:?}"
        );
    }
    for config in configs {
        let text = read(&config);
        check(&text, &dummies(&text), &config.display().to_string());
    }
}

/// Plausible values for the variables a config requires: `${VAR}` with no
/// default, in any string value (comments may mention others).
fn dummies(config: &str) -> BTreeMap<String, String> {
    let Ok(table) = config.parse::<toml::Table>() else {
        return BTreeMap::new(); // --check names the syntax error
    };
    let mut values = Vec::new();
    toml_strings(&toml::Value::Table(table), &mut values);
    let mut env = BTreeMap::new();
    for value in values {
        for reference in value.split("${").skip(1) {
            let name = &reference[..reference.find('}').expect("${VAR} is closed")];
            if name.contains(":-") {
                continue;
            }
            let dummy = match name {
                "APP_ORIGIN" => "https://myapp.example.com",
                "STRIPE_SECRET_KEY" => "sk_test_dummy",
                "STRIPE_WEBHOOK_SECRET" => "whsec_dummy",
                "SUPABASE_JWT_SECRET" => "dummy-jwt-secret",
                other => panic!("no plausible dummy for ${{{other}}}: add one in tests/deploy.rs"),
            };
            env.insert(name.to_string(), dummy.to_string());
        }
    }
    env
}

// ---------------------------------------------------------------------------
// Kubernetes: the base pod and the native-sidecar overlay
// ---------------------------------------------------------------------------

/// Each kustomization names every file beside it, and uses only what
/// these tests read of it (resources as they are, the ConfigMap generated
/// from config.toml, the overlay's one patch): a new kind of change to the
/// render must be checked here too.
#[test]
fn kustomizations_name_every_file_and_only_what_is_checked() {
    for (dir, keys) in [
        (BASE, ["resources", "configMapGenerator"]),
        (OVERLAY, ["resources", "patches"]),
        (REDIS_OVERLAY, ["resources", "patches"]),
    ] {
        let kustomization = kustomization(dir);
        let mut named = BTreeSet::new();
        for (key, value) in kustomization.as_object().unwrap() {
            assert!(
                ["apiVersion", "kind"].contains(&key.as_str()) || keys.contains(&key.as_str()),
                "{dir}/kustomization.yaml: `{key}` changes the render in a way tests/deploy.rs \
                 does not read: check its effect there"
            );
            for item in value.as_array().into_iter().flatten() {
                let file = match key.as_str() {
                    "resources" => item.as_str(),
                    "patches" => item["path"].as_str(),
                    _ => None,
                };
                named.extend(file.map(str::to_string));
                // configMapGenerator files: `file` or `key=file`.
                let files = strings_of(&item["files"]);
                named.extend(files.map(|f| f.rsplit('=').next().unwrap().to_string()));
            }
        }
        for name in &named {
            let path = repo(dir).join(name);
            assert!(
                path.is_file() || path.join("kustomization.yaml").is_file(),
                "{dir}/kustomization.yaml names {name}, which does not exist"
            );
        }
        for file in files_under(&repo(dir)) {
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(
                ["kustomization.yaml", "README.md"].contains(&name) || named.contains(name),
                "{dir}/{name} is not used by its kustomization.yaml: reference it or remove it"
            );
        }
    }
    for overlay in [OVERLAY, REDIS_OVERLAY] {
        assert_eq!(
            strings(&kustomization(overlay)["resources"]),
            ["../../base"],
            "{overlay} builds on the base"
        );
    }
}

/// The Redis overlay: the sidecar (checked by name) gets `REDIS_URL` from
/// a Secret, which the base config reads as `state.redis_url`, and the
/// Deployment scales out; nothing else.
#[test]
fn redis_overlay_wires_the_sidecar_to_redis() {
    let ops = yaml_document(&repo(REDIS_OVERLAY).join("redis.yaml"));
    let ops = ops.as_array().expect("a JSON patch");
    let op = |name: &str, path: &str| {
        ops.iter()
            .find(|o| o["op"] == name && o["path"] == path)
            .unwrap_or_else(|| panic!("redis.yaml: no `{name} {path}`"))
    };
    assert_eq!(
        op("test", "/spec/template/spec/containers/1/name")["value"],
        "stripe-sidecar"
    );
    let env = &op("add", "/spec/template/spec/containers/1/env/-")["value"];
    assert_eq!(env["name"], "REDIS_URL");
    assert_eq!(
        env["valueFrom"]["secretKeyRef"]["name"],
        "stripe-sidecar-redis"
    );
    assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "url");
    assert!(op("replace", "/spec/replicas")["value"].as_u64() > Some(1));
    assert_eq!(
        ops.len(),
        3,
        "redis.yaml: operations this test does not check"
    );
    let config = std::fs::read_to_string(repo(BASE).join("config.toml")).unwrap();
    assert!(
        config.contains("redis_url = \"${REDIS_URL:-}\""),
        "the base config reads REDIS_URL"
    );
}

#[test]
fn kubernetes_base_pod_agrees_with_its_config() {
    let pod = Pod::read();
    let config = pod.config();
    let (listen, admin) = ports(&config);
    let sidecar = pod.sidecar();

    assert_eq!(named_port(sidecar, &json!("http")), listen, "http port");
    assert_eq!(named_port(sidecar, &json!("admin")), admin, "admin port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert_eq!(
            named_port(sidecar, &get["port"]),
            admin,
            "{probe} is on the admin port"
        );
    }
    assert_eq!(
        pod.template["metadata"]["annotations"]["prometheus.io/port"],
        admin.to_string(),
        "Prometheus scrapes the admin port"
    );

    // The Service sends everything to the sidecar's server.listen, nothing
    // to the admin port or the app.
    let service = yaml_document(&repo(BASE).join("service.yaml"));
    let labels = &pod.template["metadata"]["labels"];
    assert_subset(&service["spec"]["selector"], labels, "Service selector");
    assert_subset(
        &pod.deployment["spec"]["selector"]["matchLabels"],
        labels,
        "Deployment selector",
    );
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    assert!(!service_ports.is_empty(), "the Service has ports");
    for port in service_ports {
        assert_eq!(
            named_port(sidecar, &port["targetPort"]),
            listen,
            "Service port {} targets server.listen",
            port["port"]
        );
    }

    // The app listens on upstream.url, on localhost only.
    let upstream = url::Url::parse(config["upstream"]["url"].as_str().unwrap()).unwrap();
    let app = pod.app();
    let env = literal_env(app);
    assert_eq!(
        env.get("PORT").cloned(),
        upstream.port_or_known_default().map(|p| p.to_string()),
        "the app's PORT is upstream.url's port"
    );
    assert_eq!(
        env.get("HOSTNAME").map(String::as_str),
        upstream.host_str(),
        "the app binds upstream.url's host"
    );
    assert!(
        matches!(upstream.host_str(), Some("127.0.0.1" | "localhost")),
        "upstream.url is on localhost: {upstream}"
    );
    assert!(
        app.get("ports").is_none(),
        "the app declares no ports: it is reachable only through the sidecar"
    );

    // Both containers get SIGTERM at once: the app's preStop sleep keeps it
    // serving through the sidecar's drain, and nothing is killed mid-grace.
    let (drain, grace) = shutdown(&config);
    let app_stop = pod.app_stop();
    assert!(
        app_stop >= drain,
        "the app's preStop sleep ({app_stop}) covers the sidecar's drain ({drain})"
    );
    let budget = pod.spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        budget > drain + grace && budget > app_stop,
        "terminationGracePeriodSeconds ({budget}) must exceed drain {drain} + grace {grace} \
         and the app's preStop sleep ({app_stop})"
    );

    // The image's user, which runAsNonRoot can only verify when numeric.
    let security = &pod.spec["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "runAsNonRoot");
    let own = &sidecar["securityContext"]["runAsUser"];
    let uid = if own.is_null() {
        &security["runAsUser"]
    } else {
        own
    };
    assert_eq!(
        uid.as_u64(),
        Some(Dockerfile::read().user()),
        "the sidecar runs as the image's USER"
    );
    let image = sidecar["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "the sidecar image is this version: {image}"
    );
}

/// The overlay's JSON patch, read op by op: it moves the base's sidecar to
/// the init containers, and its probe and budget still fit the config.
#[test]
fn native_sidecar_overlay_agrees_with_the_config() {
    let pod = Pod::read();
    let config = pod.config();
    let (_, admin) = ports(&config);
    let (drain, grace) = shutdown(&config);

    let patches = &kustomization(OVERLAY)["patches"];
    assert_eq!(
        patches,
        &json!([{
            "path": "native-sidecar.yaml",
            "target": { "kind": "Deployment", "name": pod.deployment["metadata"]["name"] },
        }]),
        "the overlay patches the base Deployment with native-sidecar.yaml, and nothing else"
    );
    let ops = yaml_document(&repo(OVERLAY).join("native-sidecar.yaml"));
    let ops = ops
        .as_array()
        .expect("a JSON patch is a list of operations");
    let read: Vec<Cell<bool>> = ops.iter().map(|_| Cell::new(false)).collect();
    let seen = &read;
    // The operation `name` on `path`, which the patch must have.
    let op = move |name: &str, path: &str| {
        let at = ops
            .iter()
            .position(|o| o["op"] == name && o["path"] == path)
            .unwrap_or_else(|| panic!("native-sidecar.yaml: no `{name} {path}`"));
        seen[at].set(true);
        &ops[at]
    };

    let index = pod.sidecar_index();
    let from = format!("/spec/template/spec/containers/{index}");
    assert_eq!(
        op("test", &format!("{from}/name"))["value"],
        SIDECAR,
        "the patch's test names the base's sidecar"
    );
    assert_eq!(
        op("add", "/spec/template/spec/initContainers")["value"],
        json!([])
    );
    let to = "/spec/template/spec/initContainers/0";
    assert_eq!(
        op("move", to)["from"],
        from.as_str(),
        "the patch moves the base's sidecar (containers[{index}])"
    );
    assert_eq!(
        op("add", &format!("{to}/restartPolicy"))["value"],
        "Always",
        "an init container with restartPolicy Always is a native sidecar"
    );
    // The app starts only once the sidecar is listening.
    let startup = &op("add", &format!("{to}/startupProbe"))["value"]["httpGet"];
    assert_eq!(startup["path"], "/readyz", "startupProbe path");
    assert_eq!(
        named_port(pod.sidecar(), &startup["port"]),
        admin,
        "startupProbe is on the admin port"
    );
    // Native sidecars stop after the app has exited: the app's preStop
    // sleep comes first, then the sidecar's drain and grace.
    let app_stop = pod.app_stop();
    let budget = op(
        "replace",
        "/spec/template/spec/terminationGracePeriodSeconds",
    )["value"]
        .as_u64()
        .unwrap();
    assert!(
        budget > app_stop + drain + grace,
        "the overlay's terminationGracePeriodSeconds ({budget}) must exceed the app's \
         preStop sleep {app_stop} + drain {drain} + grace {grace}"
    );
    let unread: Vec<&Value> = ops
        .iter()
        .zip(&read)
        .filter(|(_, read)| !read.get())
        .map(|(op, _)| op)
        .collect();
    assert!(
        unread.is_empty(),
        "native-sidecar.yaml: operations tests/deploy.rs does not check: {unread:?}"
    );
}

/// deploy/kubernetes/base/deployment.yaml, as it is.
struct Pod {
    deployment: Value,
    template: Value,
    spec: Value,
}

impl Pod {
    fn read() -> Pod {
        let deployment = yaml_document(&repo(BASE).join("deployment.yaml"));
        assert_eq!(deployment["kind"], "Deployment");
        let template = deployment["spec"]["template"].clone();
        let spec = template["spec"].clone();
        Pod {
            deployment,
            template,
            spec,
        }
    }

    fn containers(&self) -> &[Value] {
        self.spec["containers"].as_array().unwrap()
    }

    fn sidecar_index(&self) -> usize {
        self.containers()
            .iter()
            .position(|c| c["name"] == SIDECAR)
            .unwrap_or_else(|| panic!("no {SIDECAR} container in the base Deployment"))
    }

    fn sidecar(&self) -> &Value {
        &self.containers()[self.sidecar_index()]
    }

    fn app(&self) -> &Value {
        let apps: Vec<&Value> = self
            .containers()
            .iter()
            .filter(|c| c["name"] != SIDECAR)
            .collect();
        assert_eq!(apps.len(), 1, "one app container");
        apps[0]
    }

    fn app_stop(&self) -> u64 {
        self.app()["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("the app has a preStop sleep")
    }

    /// The effective configuration `--check` prints for the config.toml
    /// the sidecar reads, in the sidecar's environment.
    fn config(&self) -> toml::Table {
        let effective = check(
            &self.config_text(),
            &self.sidecar_env(),
            "deploy/kubernetes/base/config.toml in the pod's environment",
        );
        assert_eq!(
            effective["stripe"]["secret_key"].as_str(),
            Some("<redacted>"),
            "the Secret's STRIPE_SECRET_KEY reaches stripe.secret_key"
        );
        effective
    }

    /// The sidecar's environment as Kubernetes builds it: literal values
    /// and keys of secret.yaml.
    fn sidecar_env(&self) -> BTreeMap<String, String> {
        let secret = yaml_document(&repo(BASE).join("secret.yaml"));
        let sidecar = self.sidecar();
        assert!(
            sidecar.get("envFrom").is_none(),
            "envFrom is not read here; list the variables in env"
        );
        let mut env = BTreeMap::new();
        for var in sidecar["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_string();
            if let Some(value) = var["value"].as_str() {
                env.insert(name, value.to_string());
                continue;
            }
            let reference = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(
                reference["name"], secret["metadata"]["name"],
                "{name} comes from the Secret in secret.yaml"
            );
            let key = reference["key"].as_str().unwrap();
            match secret["stringData"][key].as_str() {
                Some(value) => {
                    env.insert(name, value.to_string());
                }
                None => assert_eq!(
                    reference["optional"], true,
                    "{name}: secret.yaml has no stringData {key} and the reference is not optional"
                ),
            }
        }
        env
    }

    /// The generated ConfigMap's config.toml, mounted where
    /// STRIPE_SIDECAR_CONFIG (or the image's default) points.
    fn config_text(&self) -> String {
        let sidecar = self.sidecar();
        let path = literal_env(sidecar)
            .remove("STRIPE_SIDECAR_CONFIG")
            .unwrap_or_else(|| Dockerfile::read().config_path());
        let (dir, file) = path.rsplit_once('/').unwrap();
        let mount = sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing is mounted at {dir} for {path}"));
        assert!(
            mount.get("subPath").is_none(),
            "subPath mounts do not see ConfigMap updates"
        );
        let volume = self.spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
        assert!(
            volume["configMap"]["items"].is_null(),
            "configMap items are not read here"
        );
        let generators = &kustomization(BASE)["configMapGenerator"];
        let generator = generators
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == volume["configMap"]["name"])
            .unwrap_or_else(|| {
                panic!(
                    "the base generates no ConfigMap {}",
                    volume["configMap"]["name"]
                )
            });
        assert!(
            strings(&generator["files"]).contains(&file.to_string()),
            "the ConfigMap {} holds {file} from {BASE}/{file}",
            generator["name"]
        );
        read(&repo(BASE).join(file))
    }
}

fn kustomization(dir: &str) -> Value {
    let kustomization = yaml_document(&repo(dir).join("kustomization.yaml"));
    assert_eq!(kustomization["kind"], "Kustomization", "{dir}");
    kustomization
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

fn strings(list: &Value) -> Vec<String> {
    strings_of(list).map(str::to_string).collect()
}

/// The items of a list of strings (none when `list` is absent).
fn strings_of(list: &Value) -> impl Iterator<Item = &str> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| item.as_str().expect("a list of strings"))
}

// ---------------------------------------------------------------------------
// The container image
// ---------------------------------------------------------------------------

/// deploy/Dockerfile's final stage, line by line (the instructions read
/// here are one-liners).
struct Dockerfile {
    /// Every instruction line, comments and continuations dropped.
    all: Vec<String>,
    /// The final stage's lines, from the last FROM on.
    final_stage: Vec<String>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let all: Vec<String> = read(&repo("deploy/Dockerfile"))
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        let from = all
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .expect("a FROM");
        let final_stage = all[from..].to_vec();
        Dockerfile { all, final_stage }
    }

    /// The arguments of the final stage's `keyword` instructions.
    fn instructions(&self, keyword: &str) -> Vec<&str> {
        self.final_stage
            .iter()
            .filter_map(|l| l.strip_prefix(keyword)?.strip_prefix(' '))
            .collect()
    }

    fn one(&self, keyword: &str) -> &str {
        let all = self.instructions(keyword);
        assert_eq!(
            all.len(),
            1,
            "deploy/Dockerfile: one {keyword} in the final stage"
        );
        all[0]
    }

    fn config_path(&self) -> String {
        self.instructions("ENV")
            .into_iter()
            .find_map(|rest| rest.strip_prefix("STRIPE_SIDECAR_CONFIG="))
            .expect("deploy/Dockerfile sets ENV STRIPE_SIDECAR_CONFIG=...")
            .to_string()
    }

    fn user(&self) -> u64 {
        let user = self.one("USER");
        let uid: u64 = user.split(':').next().unwrap().parse().unwrap_or_else(|_| {
            panic!("USER {user}: numeric, so Kubernetes' runAsNonRoot can check it")
        });
        assert_ne!(uid, 0, "USER {user}: not root");
        uid
    }

    /// `(sources, destination)` of every COPY from the build context (not
    /// `--from` another stage), in every stage.
    fn context_copies(&self) -> Vec<(Vec<&str>, &str)> {
        self.all
            .iter()
            .filter_map(|l| l.strip_prefix("COPY "))
            .filter(|rest| !rest.contains("--from="))
            .map(|rest| {
                let mut words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let destination = words.pop().expect("COPY destination");
                (words, destination)
            })
            .collect()
    }
}

#[test]
fn dockerfile_ships_its_default_config_and_exposes_its_ports() {
    let dockerfile = Dockerfile::read();
    let config_path = dockerfile.config_path();
    assert!(
        dockerfile
            .context_copies()
            .contains(&(vec!["deploy/config.toml"], config_path.as_str())),
        "the image copies deploy/config.toml to STRIPE_SIDECAR_CONFIG ({config_path})"
    );
    dockerfile.user();
    let entrypoint: Vec<String> = serde_json::from_str(dockerfile.one("ENTRYPOINT"))
        .expect("ENTRYPOINT in exec form (no shell in the image; the binary gets SIGTERM)");
    assert!(
        dockerfile
            .instructions("COPY")
            .iter()
            .any(|copy| copy.starts_with("--from=")
                && copy.ends_with(&format!(" {}", entrypoint[0]))),
        "ENTRYPOINT runs the binary copied from the build stage: {entrypoint:?}"
    );

    let text = read(&repo("deploy/config.toml"));
    let config = check(&text, &dummies(&text), "deploy/config.toml");
    let (listen, admin) = ports(&config);
    let exposed: BTreeSet<u16> = dockerfile
        .instructions("EXPOSE")
        .iter()
        .flat_map(|ports| ports.split_whitespace())
        .map(|port| port.trim_end_matches("/tcp").parse().unwrap())
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from([listen, admin]),
        "EXPOSE the config's two ports"
    );
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
    let dockerfile = Dockerfile::read();
    let copies = dockerfile.context_copies();
    assert!(!copies.is_empty(), "the Dockerfile copies from the context");
    for (sources, _) in copies {
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

// ---------------------------------------------------------------------------
// docker compose
// ---------------------------------------------------------------------------

#[test]
fn compose_runs_the_sidecar_in_front_of_the_app_against_stripe_mock() {
    let compose = yaml_document(&repo("deploy/docker-compose.yml"));
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
        .unwrap_or_else(|| Dockerfile::read().config_path());
    let host_config = compose_mounts(sidecar)
        .into_iter()
        .find(|(_, target)| *target == config_path)
        .map(|(host, _)| deploy.join(host))
        .unwrap_or_else(|| panic!("{name}: nothing is mounted at {config_path}"));
    let config = check(
        &read(&host_config),
        &env,
        &host_config.display().to_string(),
    );
    let (listen, admin) = ports(&config);

    // "[IP:]HOST:CONTAINER" as (IP, HOST, CONTAINER).
    let published: Vec<(Option<&str>, u16, u16)> = strings_of(&sidecar["ports"])
        .map(|spec| {
            let mut parts = spec.rsplitn(3, ':');
            let container = parts.next().unwrap().parse().unwrap();
            let host = parts.next().expect("HOST:CONTAINER").parse().unwrap();
            (parts.next(), host, container)
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
            assert_eq!(*ip, Some("127.0.0.1"), "metrics stay on this machine");
        }
    }
    let origins = config["checkout"]["allowed_redirect_origins"]
        .as_array()
        .unwrap();
    assert!(
        origins.contains(&toml::Value::from(format!("http://localhost:{app_port}"))),
        "the demo page's origin is allowed: {origins:?}"
    );

    // docker compose stop: SIGTERM, then SIGKILL after stop_grace_period.
    let (drain, grace) = shutdown(&config);
    let stop = match &sidecar["stop_grace_period"] {
        Value::Null => COMPOSE_DEFAULT_STOP_SECONDS,
        period => period
            .as_str()
            .and_then(|p| p.strip_suffix('s')?.parse().ok())
            .unwrap_or_else(|| panic!("{name}: stop_grace_period in seconds (`35s`): {period}")),
    };
    assert!(
        stop > drain + grace,
        "{name}: stop_grace_period ({stop} s) must exceed drain {drain} + grace {grace}"
    );

    // Stripe is stripe-mock, on its HTTP port.
    let api_base = url::Url::parse(config["stripe"]["api_base"].as_str().unwrap()).unwrap();
    let mock_name = api_base.host_str().unwrap();
    assert!(
        services[mock_name]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("stripe/stripe-mock")),
        "stripe.api_base is the stripe-mock service: {api_base}"
    );
    assert_eq!(
        (api_base.scheme(), api_base.port()),
        ("http", Some(12111)),
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
        app_env.get("PORT").cloned(),
        upstream.port().map(|p| p.to_string()),
        "{app_name} listens on upstream.url's port"
    );
    for shared in ["SUPABASE_JWT_SECRET", "STRIPE_WEBHOOK_SECRET"] {
        assert_eq!(
            app_env.get(shared),
            env.get(shared),
            "{shared} is the same for both"
        );
    }
    // Compose starts the sidecar after the services it depends on are
    // healthy, and stops it before them.
    let depends = sidecar["depends_on"].as_object().unwrap();
    for needed in [app_name, mock_name] {
        assert_eq!(
            depends[needed]["condition"], "service_healthy",
            "{name} waits for {needed}"
        );
        let service = &services[needed];
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{needed} has a healthcheck"
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

/// Every message a reply's `error` can carry, found in any `.rs` file
/// under `src/` (subfolders included), is in docs/troubleshooting.md (the
/// parts around `{placeholders}`).
#[test]
fn troubleshooting_lists_every_error_message() {
    let guide = read(&repo("docs/troubleshooting.md"));
    let mut messages = Vec::new();
    for file in files_under(&repo("src")) {
        if file.extension().is_some_and(|e| e == "rs") {
            for message in error_messages(&file) {
                messages.push((file.display().to_string(), message));
            }
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
/// argument of every `BadRequest(...)` and `bad(...)`, and in the error
/// module (`src/error.rs` or `src/error/*.rs`, where errors become
/// replies) every literal of more than one word: the replies and the log
/// lines that explain them. Unit tests and comments are skipped.
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
    let in_error_module = file.file_stem().is_some_and(|s| s == "error")
        || file.parent().is_some_and(|d| d.ends_with("src/error"));
    if in_error_module {
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
// The binary's --check
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
    assert!(
        output.status.success(),
        "{what} fails stripe-sidecar --check with {:?}:\n{}",
        env.keys().collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("--check printed no TOML ({e}):\n{stdout}"))
}

/// The ports of `server.listen` and `server.admin_listen`.
fn ports(config: &toml::Table) -> (u16, u16) {
    let port = |key: &str| {
        let address = config["server"][key].as_str().unwrap();
        address
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|_| panic!("server.{key} is not an address: {address}"))
            .port()
    };
    (port("listen"), port("admin_listen"))
}

/// `server.shutdown_drain_seconds` and `server.shutdown_grace_seconds`.
fn shutdown(config: &toml::Table) -> (u64, u64) {
    let seconds = |key: &str| config["server"][key].as_integer().unwrap() as u64;
    (
        seconds("shutdown_drain_seconds"),
        seconds("shutdown_grace_seconds"),
    )
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
            Component::CurDir => {}
            Component::ParentDir => {
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

/// The files under `dir`, sorted, leaving out `target/` and hidden folders.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            if !path.is_dir() {
                files.push(path);
            } else if name != "target" && !name.starts_with('.') {
                dirs.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The one YAML document of `path`, as JSON.
fn yaml_document(path: &Path) -> Value {
    let at = path.display().to_string();
    let mut documents =
        YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
    assert_eq!(documents.len(), 1, "{at}: one YAML document");
    to_json(documents.remove(0), &at)
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
            .map(|(key, value)| match key {
                Yaml::String(key) => (key, to_json(value, source)),
                other => panic!("{source}: a non-string key {other:?}"),
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{source}: aliases are not read here"),
    }
}
