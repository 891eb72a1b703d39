//! Resolution against real registries: the Debian `docker-registry` (distribution 2.8) started
//! per test on a free loopback port, with content pushed by oci-client itself.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codeb_registry::{Auth, Digest, ImageRef, RegistryError, Resolver};
use codeb_secret::Secret;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use tempfile::TempDir;

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
const USER: &str = "deployer";
const PASSWORD: &str = "codeb-test-password";
/// bcrypt (cost 5) of PASSWORD; the registry accepts only bcrypt in htpasswd files.
const PASSWORD_BCRYPT: &str = "$2b$05$VcVm4vLSAscU7qZOxRBkX.6ePdcn65v2qAZWL/F7Szj29Ad5E/w12";

/// A free loopback port outside the preview range (5000-5999), released for the caller.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if !(5000..=5999).contains(&port) {
            return port;
        }
    }
}

/// A `docker-registry serve` process, killed on drop.
struct TestRegistry {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl TestRegistry {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With htpasswd basic auth: USER / PASSWORD.
    async fn start_with_auth() -> Self {
        Self::start_with(Some(format!("{USER}:{PASSWORD_BCRYPT}\n"))).await
    }

    async fn start_with(htpasswd: Option<String>) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\n\
             log: {{level: warn}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}}}\n\
             http: {{addr: {addr}}}\n",
            dir.path().join("data").display()
        );
        if let Some(htpasswd) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, htpasswd).expect("write the htpasswd file");
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: basic-realm, path: {}}}}}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log"))
            .expect("create the registry log");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let mut registry = Self {
            child,
            addr,
            _dir: dir,
        };
        registry.wait_ready().await;
        registry
    }

    /// Waits until `GET /v2/` gets an HTTP answer (200, or 401 with auth).
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://{}/v2/", self.addr);
        let client = reqwest::Client::new();
        loop {
            let answered = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok();
            if answered {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}) before answering: {}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry on {} did not answer within 20s: {}",
                self.addr,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    fn image(&self, rest: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{rest}", self.addr)).expect("a valid test reference")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plain_http_client() -> Client {
    Client::try_from(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
    .expect("an oci-client for pushing")
}

fn sha256(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Pushes a one-layer image as `repository:tag` and returns its manifest digest: the one in the
/// manifest URL the registry returned, checked against the sha256 of the manifest fetched back.
async fn push_image(
    registry: &TestRegistry,
    repository: &str,
    tag: &str,
    layer: &[u8],
    auth: &RegistryAuth,
) -> Digest {
    let client = plain_http_client();
    let reference = Reference::with_tag(
        registry.addr.clone(),
        repository.to_string(),
        tag.to_string(),
    );
    let config = Config::oci_v1(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
        None,
    );
    let layers = [ImageLayer::oci_v1(layer.to_vec(), None)];
    let pushed = client
        .push(&reference, &layers, config, auth, None)
        .await
        .expect("push the test image");
    let (_, from_url) = pushed
        .manifest_url
        .rsplit_once("/manifests/")
        .expect("the manifest URL ends in /manifests/<digest>");
    let digest = Digest::parse(from_url).expect("the registry names the manifest by digest");

    let mut request = reqwest::Client::new()
        .get(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.addr
        ))
        .header("Accept", OCI_IMAGE_MEDIA_TYPE);
    if let RegistryAuth::Basic(user, password) = auth {
        request = request.basic_auth(user, Some(password));
    }
    let body = request
        .send()
        .await
        .expect("fetch the pushed manifest")
        .bytes()
        .await
        .expect("read the pushed manifest");
    assert_eq!(
        sha256(&body),
        digest.as_str(),
        "the manifest URL names the pushed bytes"
    );
    digest
}

/// Pushes an OCI index over the given manifests as `repository:tag`; returns its digest.
async fn push_index(
    registry: &TestRegistry,
    repository: &str,
    tag: &str,
    manifests: &[&Digest],
) -> Digest {
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|digest| {
            serde_json::json!({
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "digest": digest.as_str(),
                "size": 1,
                "platform": {"architecture": "amd64", "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    let body = serde_json::to_vec(&index).expect("serialize the index");
    let digest = sha256(&body);
    let reference = Reference::with_tag(
        registry.addr.clone(),
        repository.to_string(),
        tag.to_string(),
    );
    plain_http_client()
        .push_manifest_raw(
            &reference,
            body,
            reqwest::header::HeaderValue::from_static(OCI_IMAGE_INDEX_MEDIA_TYPE),
        )
        .await
        .expect("push the index");
    Digest::parse(&digest).expect("a sha256 digest")
}

#[tokio::test]
async fn resolves_tags_and_verifies_digests() {
    let registry = TestRegistry::start().await;
    let v1 = push_image(
        &registry,
        "org/app",
        "v1",
        b"layer one",
        &RegistryAuth::Anonymous,
    )
    .await;
    let v2 = push_image(
        &registry,
        "org/app",
        "v2",
        b"layer two",
        &RegistryAuth::Anonymous,
    )
    .await;
    assert_ne!(v1, v2);
    let resolver = Resolver::new();

    for (tag, expected) in [("v1", &v1), ("v2", &v2)] {
        let image = registry.image(&format!("org/app:{tag}"));
        let resolved = resolver
            .resolve(&image, &Auth::Anonymous)
            .await
            .expect("a pushed tag resolves");
        assert_eq!(&resolved.digest, expected, "{tag}");
        assert_eq!(resolved.media_type, OCI_IMAGE_MEDIA_TYPE);
        assert!(!resolved.is_index());

        // The pinned reference resolves to itself.
        let pinned = ImageRef::parse(&image.pinned(&resolved.digest)).expect("pinned parses");
        assert_eq!(
            pinned.to_string(),
            format!("{}/org/app@{expected}", registry.addr)
        );
        let again = resolver
            .resolve(&pinned, &Auth::Anonymous)
            .await
            .expect("the pinned digest resolves");
        assert_eq!(&again.digest, expected);
    }

    // With both a tag and a digest the digest wins, as in podman.
    let both = registry.image(&format!("org/app:v1@{v2}"));
    let resolved = resolver
        .resolve(&both, &Auth::Anonymous)
        .await
        .expect("tag@digest resolves by digest");
    assert_eq!(resolved.digest, v2);

    // A digest the registry does not have.
    let unknown = Digest::of_bytes(b"never pushed");
    let image = registry.image(&format!("org/app@{unknown}"));
    match resolver.resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::ManifestNotFound { .. }) => {
            let message = err.to_string();
            assert!(message.contains(unknown.as_str()), "{message}");
            assert!(message.contains("org/app"), "{message}");
        }
        other => panic!("expected ManifestNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn resolves_an_index_to_the_index_digest() {
    let registry = TestRegistry::start().await;
    let v1 = push_image(
        &registry,
        "org/app",
        "v1",
        b"amd64",
        &RegistryAuth::Anonymous,
    )
    .await;
    let index = push_index(&registry, "org/app", "multi", &[&v1]).await;
    let resolved = Resolver::new()
        .resolve(&registry.image("org/app:multi"), &Auth::Anonymous)
        .await
        .expect("an index tag resolves");
    assert_eq!(resolved.digest, index);
    assert_eq!(resolved.media_type, OCI_IMAGE_INDEX_MEDIA_TYPE);
    assert!(resolved.is_index());
}

#[tokio::test]
async fn missing_tag_and_missing_repository_are_told_apart() {
    let registry = TestRegistry::start().await;
    push_image(&registry, "org/app", "v1", b"one", &RegistryAuth::Anonymous).await;
    push_image(&registry, "org/app", "v2", b"two", &RegistryAuth::Anonymous).await;
    let resolver = Resolver::new();

    match resolver
        .resolve(&registry.image("org/app:v3"), &Auth::Anonymous)
        .await
    {
        Err(err @ RegistryError::TagNotFound { .. }) => {
            let message = err.to_string();
            assert!(message.contains("tag \"v3\" not found"), "{message}");
            assert!(
                message.contains(&format!("{}/org/app", registry.addr)),
                "{message}"
            );
            assert!(message.contains("(it has: v1, v2)"), "{message}");
            assert!(message.contains("was the image pushed?"), "{message}");
        }
        other => panic!("expected TagNotFound, got {other:?}"),
    }

    for missing in [
        "org/nope:v1".to_string(),
        format!("org/nope@{}", Digest::of_bytes(b"x")),
    ] {
        match resolver
            .resolve(&registry.image(&missing), &Auth::Anonymous)
            .await
        {
            Err(err @ RegistryError::RepositoryNotFound { .. }) => {
                let message = err.to_string();
                assert!(
                    message.contains("repository org/nope not found"),
                    "{message}"
                );
                assert!(message.contains(&registry.addr), "{message}");
            }
            other => panic!("{missing}: expected RepositoryNotFound, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_registry_that_is_down_is_unreachable() {
    let port = free_port();
    let image = ImageRef::parse(&format!("127.0.0.1:{port}/org/app:v1")).expect("valid");
    let started = Instant::now();
    match Resolver::new().resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::Unreachable { .. }) => {
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("registry 127.0.0.1:{port} is unreachable")),
                "{message}"
            );
            assert!(message.to_lowercase().contains("refused"), "{message}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
}

#[tokio::test]
async fn only_loopback_registries_get_plain_http() {
    // 127.1 is 127.0.0.1 to the URL parser but not a loopback name to ImageRef, so the resolver
    // speaks HTTPS to the plain-HTTP registry and the handshake fails.
    let registry = TestRegistry::start().await;
    let port = registry
        .addr
        .rsplit_once(':')
        .map(|(_, port)| port.to_string())
        .expect("addr has a port");
    let image = ImageRef::parse(&format!("127.1:{port}/org/app:v1")).expect("valid");
    assert!(!image.is_loopback());
    match Resolver::new().resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::Tls { .. }) => {
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("TLS with registry 127.1:{port} failed")),
                "{message}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_authenticating_registry_refuses_wrong_credentials() {
    let registry = TestRegistry::start_with_auth().await;
    let right = RegistryAuth::Basic(USER.into(), PASSWORD.into());
    let v1 = push_image(&registry, "org/app", "v1", b"private", &right).await;
    let image = registry.image("org/app:v1");
    let resolver = Resolver::new();

    match resolver.resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::AuthRefused { .. }) => {
            let message = err.to_string();
            assert!(message.contains("with anonymous access"), "{message}");
            assert!(message.contains("CODEB_REGISTRY_USERNAME"), "{message}");
            assert!(message.contains("private or not exist"), "{message}");
        }
        other => panic!("anonymous: expected AuthRefused, got {other:?}"),
    }

    let wrong_password = "wrong-password-value";
    let wrong = Auth::Basic {
        username: USER.into(),
        password: Secret::new(wrong_password),
    };
    match resolver.resolve(&image, &wrong).await {
        Err(err @ RegistryError::AuthRefused { .. }) => {
            let message = err.to_string();
            let debug = format!("{err:?}");
            assert!(message.contains("user \"deployer\""), "{message}");
            assert!(!message.contains(wrong_password), "{message}");
            assert!(!debug.contains(wrong_password), "{debug}");
        }
        other => panic!("wrong password: expected AuthRefused, got {other:?}"),
    }

    let ok = Auth::Basic {
        username: USER.into(),
        password: Secret::new(PASSWORD),
    };
    let resolved = resolver
        .resolve(&image, &ok)
        .await
        .expect("the right password resolves");
    assert_eq!(resolved.digest, v1);

    // One resolver serves different credentials in turn (oci-client's own client would keep
    // the first ones it saw for the registry).
    assert!(matches!(
        resolver.resolve(&image, &Auth::Anonymous).await,
        Err(RegistryError::AuthRefused { .. })
    ));
}

/// Serves every request from `answer(path)` (a raw HTTP response), one connection at a time.
/// Real registries cannot be made to lie; this stands in for a broken one or a proxy.
async fn serve_raw(answer: fn(&str) -> String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let _ = stream.write_all(answer(&path).as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn response(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

const SERVED_MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_refused() {
    // Answers every manifest request with the same bytes, and a Docker-Content-Digest header
    // that names other content.
    let addr = serve_raw(|path| {
        if path == "/v2/" {
            return response("200 OK", &[], "{}");
        }
        let other = sha256(b"other content");
        response(
            "200 OK",
            &[
                ("Content-Type", OCI_IMAGE_MEDIA_TYPE.to_string()),
                ("Docker-Content-Digest", other),
            ],
            SERVED_MANIFEST,
        )
    })
    .await;
    let resolver = Resolver::new();

    let by_tag = ImageRef::parse(&format!("{addr}/org/app:v1")).expect("valid");
    match resolver.resolve(&by_tag, &Auth::Anonymous).await {
        Err(err @ RegistryError::DigestMismatch { .. }) => {
            let message = err.to_string();
            assert!(message.starts_with("digest mismatch for"), "{message}");
            assert!(message.contains(&sha256(b"other content")), "{message}");
        }
        other => panic!("by tag: expected DigestMismatch, got {other:?}"),
    }

    let asked = Digest::of_bytes(b"what was asked for");
    let by_digest = ImageRef::parse(&format!("{addr}/org/app@{asked}")).expect("valid");
    match resolver.resolve(&by_digest, &Auth::Anonymous).await {
        Err(err @ RegistryError::DigestMismatch { .. }) => {
            let message = err.to_string();
            assert!(message.contains(asked.as_str()), "{message}");
        }
        other => panic!("by digest: expected DigestMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_error_is_an_unexpected_answer() {
    let addr = serve_raw(|path| {
        if path == "/v2/" {
            response("200 OK", &[], "{}")
        } else {
            response("503 Service Unavailable", &[], "upstream is down")
        }
    })
    .await;
    let image = ImageRef::parse(&format!("{addr}/org/app:v1")).expect("valid");
    match Resolver::new().resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::Unexpected { .. }) => {
            let message = err.to_string();
            assert!(message.contains("HTTP 503 upstream is down"), "{message}");
            assert!(message.contains(&image.to_string()), "{message}");
        }
        other => panic!("expected Unexpected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_registry_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound").to_string();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let image = ImageRef::parse(&format!("{addr}/org/app:v1")).expect("valid");
    let resolver = Resolver::with_timeouts(
        Duration::from_secs(1),
        Duration::from_millis(300),
        Duration::from_secs(5),
    );
    match resolver.resolve(&image, &Auth::Anonymous).await {
        Err(err @ RegistryError::Unreachable { .. }) => {
            assert!(err.to_string().contains("timed out"), "{err}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn the_registry_binary_is_there() {
    assert!(
        Path::new(REGISTRY_BINARY).exists(),
        "these tests need {REGISTRY_BINARY} (Debian package docker-registry)"
    );
}

/// Runs podman with its own storage under `dir` and the test bed's containers.conf.
async fn podman(dir: &Path, args: &[&str]) -> String {
    let conf = dir.join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, codeb_testbed::TEST_CONTAINERS_CONF).expect("write containers.conf");
    }
    let output = tokio::process::Command::new("podman")
        .arg("--root")
        .arg(dir.join("storage"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(args)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .await
        .expect("run podman (Debian package podman)");
    assert!(
        output.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_digest_is_the_one_podman_pushed_and_pulls() {
    let registry = TestRegistry::start().await;
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("create the rootfs");
    std::fs::write(rootfs.join("hello"), "hello\n").expect("write a file");
    let tar = dir.path().join("rootfs.tar");
    let status = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .await
        .expect("run tar");
    assert!(status.success(), "tar failed");
    let tar = tar.to_str().expect("a UTF-8 temporary path");
    let digest_file = dir.path().join("digest");
    let target = format!("{}/org/app:v1", registry.addr);

    podman(
        dir.path(),
        &["import", tar, "localhost/codeb-registry-test:1"],
    )
    .await;
    podman(
        dir.path(),
        &[
            "push",
            "--tls-verify=false",
            "--digestfile",
            digest_file.to_str().expect("a UTF-8 temporary path"),
            "localhost/codeb-registry-test:1",
            &target,
        ],
    )
    .await;
    let pushed = std::fs::read_to_string(&digest_file).expect("podman wrote the digest file");

    let image = ImageRef::parse(&target).expect("valid");
    let resolved = Resolver::new()
        .resolve(&image, &Auth::Anonymous)
        .await
        .expect("the podman-pushed tag resolves");
    assert_eq!(resolved.digest.as_str(), pushed.trim());

    // And podman pulls the pinned reference.
    let pinned = image.pinned(&resolved.digest);
    podman(dir.path(), &["pull", "--tls-verify=false", &pinned]).await;
    let repo_digests = podman(
        dir.path(),
        &[
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &pinned,
        ],
    )
    .await;
    assert!(
        repo_digests.lines().any(|line| line.trim() == pinned),
        "{pinned} not among {repo_digests}"
    );
}
