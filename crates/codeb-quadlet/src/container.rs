//! A `.container` unit and its `podman run` arguments.
//!
//! Each supported `[Container]` key becomes the flag podman's Quadlet generator
//! (`pkg/systemd/quadlet/quadlet.go`) gives it, in the generator's order. What is left out is the
//! generator's systemd-specific prefix (`--name`, `--replace`, `--rm`, `--cgroups=split`,
//! `--sdnotify=…`, `-d`): the caller runs `podman run -d --name NAME ARGS…` itself.
//!
//! Known deviations from the generator, all on the side of refusing instead of guessing:
//! - unknown keys, unresolvable Quadlet references (`foo.network`, `foo.volume`, `foo.image`,
//!   `foo.build`, `foo.artifact`, `[Unit] After=foo.container`), optional devices
//!   (`AddDevice=-/dev/x`) and systemd-only keys (`Notify`, `ReloadCmd`, `ReloadSignal`, `Pod`,
//!   `GlobalArgs`, …) are errors;
//! - a value with an unknown escape (`\.`) is an error, where podman warns and drops the value;
//! - booleans must be systemd booleans (`yes/no/true/false/on/off/1/0`), where podman reads any
//!   other word as false; an empty boolean or `LogDriver=` means "not set";
//! - `ExposeHostPort=` must be a whole port or range (`80`, `2000-3000/udp`), and `PublishPort=`
//!   must have the `[ip:][hostPort:]containerPort[/proto]` shape;
//! - flags that podman emits from Go maps (string keys, `--env`/`--label`/`--annotation`
//!   groups) come in a fixed order here; podman's order between those groups varies from run
//!   to run, which is why the corpus assertions never depend on it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::csv;
use crate::error::{Location, QuadletError};
use crate::port::PortMapping;
use crate::split::{SplitMode, split_words};
use crate::unit::{Entry, Section, UnitFile};

/// The `[Container]` keys this crate translates. Any other key in `[Container]` is refused.
pub const SUPPORTED_CONTAINER_KEYS: &[&str] = &[
    "AddCapability",
    "AddDevice",
    "AddHost",
    "Annotation",
    "AppArmor",
    "AutoUpdate",
    "CgroupsMode",
    "ContainerName",
    "DNS",
    "DNSOption",
    "DNSSearch",
    "DropCapability",
    "Entrypoint",
    "Environment",
    "EnvironmentFile",
    "EnvironmentHost",
    "Exec",
    "ExposeHostPort",
    "GIDMap",
    "Group",
    "GroupAdd",
    "HealthCmd",
    "HealthInterval",
    "HealthLogDestination",
    "HealthMaxLogCount",
    "HealthMaxLogSize",
    "HealthOnFailure",
    "HealthRetries",
    "HealthStartPeriod",
    "HealthStartupCmd",
    "HealthStartupInterval",
    "HealthStartupRetries",
    "HealthStartupSuccess",
    "HealthStartupTimeout",
    "HealthTimeout",
    "HostName",
    "HttpProxy",
    "IP",
    "IP6",
    "Image",
    "Label",
    "LogDriver",
    "LogOpt",
    "Mask",
    "Memory",
    "Mount",
    "Network",
    "NetworkAlias",
    "NoNewPrivileges",
    "PidsLimit",
    "PodmanArgs",
    "PublishPort",
    "Pull",
    "ReadOnly",
    "ReadOnlyTmpfs",
    "RemapGid",
    "RemapUid",
    "RemapUidSize",
    "RemapUsers",
    "Retry",
    "RetryDelay",
    "Rootfs",
    "RunInit",
    "SeccompProfile",
    "Secret",
    "SecurityLabelDisable",
    "SecurityLabelFileType",
    "SecurityLabelLevel",
    "SecurityLabelNested",
    "SecurityLabelType",
    "ServiceName",
    "ShmSize",
    "StopSignal",
    "StopTimeout",
    "SubGIDMap",
    "SubUIDMap",
    "Sysctl",
    "Timezone",
    "Tmpfs",
    "UIDMap",
    "Ulimit",
    "Unmask",
    "User",
    "UserNS",
    "VolatileTmp",
    "Volume",
    "WorkingDir",
];

/// Keys accepted in the `[Quadlet]` section.
const QUADLET_SECTION_KEYS: &[&str] = &["DefaultDependencies"];

/// `[Unit]` keys whose Quadlet-unit values podman rewrites to service names.
pub const UNIT_DEPENDENCY_KEYS: &[&str] = &[
    "After",
    "Before",
    "BindsTo",
    "Conflicts",
    "OnFailure",
    "OnSuccess",
    "PartOf",
    "PropagatesReloadTo",
    "PropagatesStopTo",
    "ReloadPropagatedFrom",
    "Requires",
    "Requisite",
    "StopPropagatedFrom",
    "Upholds",
    "Wants",
];

const QUADLET_UNIT_EXTENSIONS: &[&str] = &[
    ".container",
    ".volume",
    ".kube",
    ".network",
    ".image",
    ".build",
    ".pod",
    ".artifact",
];

/// Single-value keys that become `FLAG VALUE` when set to a non-empty value.
const STRING_FLAGS: &[(&str, &str)] = &[
    ("Timezone", "--tz"),
    ("PidsLimit", "--pids-limit"),
    ("ShmSize", "--shm-size"),
    ("WorkingDir", "--workdir"),
    ("IP", "--ip"),
    ("IP6", "--ip6"),
    ("HostName", "--hostname"),
    ("StopSignal", "--stop-signal"),
    ("StopTimeout", "--stop-timeout"),
    ("Pull", "--pull"),
    ("Memory", "--memory"),
    ("Retry", "--retry"),
    ("RetryDelay", "--retry-delay"),
];

/// Repeatable keys whose every (unsplit) value becomes `FLAG VALUE`.
const REPEATED_FLAGS: &[(&str, &str)] = &[
    ("NetworkAlias", "--network-alias"),
    ("Ulimit", "--ulimit"),
    ("DNS", "--dns"),
    ("DNSOption", "--dns-option"),
    ("DNSSearch", "--dns-search"),
    ("GroupAdd", "--group-add"),
    ("AddHost", "--add-host"),
    ("Tmpfs", "--tmpfs"),
];

/// Boolean keys: `FLAG` when true, `FLAG=false` when false.
const BOOL_FLAGS: &[(&str, &str)] = &[
    ("RunInit", "--init"),
    ("EnvironmentHost", "--env-host"),
    ("ReadOnlyTmpfs", "--read-only-tmpfs"),
    ("HttpProxy", "--http-proxy"),
];

/// Health keys and the `--health-…` suffix each becomes.
const HEALTH_FLAGS: &[(&str, &str)] = &[
    ("HealthCmd", "cmd"),
    ("HealthInterval", "interval"),
    ("HealthOnFailure", "on-failure"),
    ("HealthLogDestination", "log-destination"),
    ("HealthMaxLogCount", "max-log-count"),
    ("HealthMaxLogSize", "max-log-size"),
    ("HealthRetries", "retries"),
    ("HealthStartPeriod", "start-period"),
    ("HealthTimeout", "timeout"),
    ("HealthStartupCmd", "startup-cmd"),
    ("HealthStartupInterval", "startup-interval"),
    ("HealthStartupRetries", "startup-retries"),
    ("HealthStartupSuccess", "startup-success"),
    ("HealthStartupTimeout", "startup-timeout"),
];

/// A non-fatal remark about the unit, worded like podman's generator where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the remark applies.
    pub location: Location,
    /// What is questionable.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A validated `.container` unit.
#[derive(Debug, Clone)]
pub struct ContainerUnit {
    unit: UnitFile,
    image: Option<String>,
    rootfs: Option<String>,
    container_name: Option<String>,
    service_name: String,
    published_ports: Vec<PortMapping>,
    labels: BTreeMap<String, Option<String>>,
    environment: BTreeMap<String, Option<String>>,
    environment_files: Vec<String>,
    auto_update: Option<String>,
    health_cmd: Option<String>,
    exec: Vec<String>,
    args: Vec<String>,
    warnings: Vec<Warning>,
}

impl ContainerUnit {
    /// Reads a `.container` file with its drop-ins and converts it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, QuadletError> {
        Self::from_unit(UnitFile::load(path)?)
    }

    /// Parses and converts unit text without touching the disk (no drop-ins). `path` names the
    /// unit; relative paths in values (`EnvironmentFile=env`, `Volume=./data:/data`) are resolved
    /// against its directory, so it must be absolute when such values are used.
    pub fn parse(path: impl Into<PathBuf>, text: &str) -> Result<Self, QuadletError> {
        Self::from_unit(UnitFile::parse(path, text)?)
    }

    /// Converts an already parsed unit.
    pub fn from_unit(unit: UnitFile) -> Result<Self, QuadletError> {
        Converter::run(unit)
    }

    /// The arguments for `podman run`, without `run` itself and without the generator's
    /// systemd prefix: flags, then the image (or `--rootfs PATH`), then the `Exec=` arguments.
    pub fn podman_run_args(&self) -> Vec<String> {
        self.args.clone()
    }

    /// [`Self::podman_run_args`] quoted for a POSIX shell, for logs and dry runs.
    pub fn podman_run_args_shell(&self) -> String {
        shell_words::join(&self.args)
    }

    /// `ContainerName=` when set (and non-empty).
    pub fn container_name(&self) -> Option<&str> {
        self.container_name.as_deref()
    }

    /// The name podman's generator would give the container: `ContainerName=`, else
    /// `systemd-%N` (or `systemd-%p_%i` for template units). The defaults contain systemd
    /// specifiers that only systemd expands.
    pub fn effective_container_name(&self) -> String {
        match &self.container_name {
            Some(name) => name.clone(),
            None if self.unit.file_name().contains('@') => "systemd-%p_%i".to_string(),
            None => "systemd-%N".to_string(),
        }
    }

    /// The systemd service name without `.service`: `ServiceName=` or the file name without
    /// its extension.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// `Image=` (the last one), unless the unit uses `Rootfs=`.
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// `Rootfs=`, when the unit runs from a root filesystem instead of an image.
    pub fn rootfs(&self) -> Option<&str> {
        self.rootfs.as_deref()
    }

    /// Every `PublishPort=` in effect, in order.
    pub fn published_ports(&self) -> &[PortMapping] {
        &self.published_ports
    }

    /// `Label=` assignments (later ones win; a bare `KEY` maps to `None`). `AutoUpdate=` is
    /// separate: see [`Self::auto_update`].
    pub fn labels(&self) -> &BTreeMap<String, Option<String>> {
        &self.labels
    }

    /// `Environment=` assignments (later ones win; a bare `KEY` passes the host's value).
    pub fn environment(&self) -> &BTreeMap<String, Option<String>> {
        &self.environment
    }

    /// `EnvironmentFile=` paths, made absolute against the unit's directory.
    pub fn environment_files(&self) -> &[String] {
        &self.environment_files
    }

    /// `AutoUpdate=` (emitted as the `io.containers.autoupdate` label).
    pub fn auto_update(&self) -> Option<&str> {
        self.auto_update.as_deref()
    }

    /// `HealthCmd=` as podman receives it.
    pub fn health_cmd(&self) -> Option<&str> {
        self.health_cmd.as_deref()
    }

    /// The `Exec=` arguments (after the image).
    pub fn exec(&self) -> &[String] {
        &self.exec
    }

    /// The `[Service]` section, passed through untouched (e.g. `Restart=`, `TimeoutStartSec=`).
    pub fn service(&self) -> Option<&Section> {
        self.unit.section("Service")
    }

    /// Any section by name (`Unit`, `Service`, `Install`, `Container`, …).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.unit.section(name)
    }

    /// The sections that are not podman arguments (`[Unit]`, `[Service]`, `[Install]`, and any
    /// other), in file order: everything except `[Container]` and `[Quadlet]`.
    pub fn passthrough_sections(&self) -> impl Iterator<Item = &Section> {
        self.unit
            .sections()
            .iter()
            .filter(|s| s.name() != "Container" && s.name() != "Quadlet")
    }

    /// The parsed unit, drop-ins included.
    pub fn unit(&self) -> &UnitFile {
        &self.unit
    }

    /// Non-fatal remarks (short image names, unquoted values that look truncated, `[Service]`
    /// keys podman ignores).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

/// Builds the argument list from one unit.
struct Converter<'a> {
    unit: &'a UnitFile,
    container: &'a Section,
    args: Vec<String>,
    warnings: Vec<Warning>,
}

fn file_location(unit: &UnitFile) -> Location {
    Location::file(unit.path())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// The Quadlet unit extension `value` ends with, among `exts`.
fn quadlet_reference<'e>(value: &str, exts: &[&'e str]) -> Option<&'e str> {
    exts.iter()
        .find(|ext| value.len() > ext.len() && value.ends_with(*ext))
        .copied()
}

fn unit_reference_error(entry: &Entry, key: &str, value: &str, unit: &str) -> QuadletError {
    let (stem, ext) = unit.rsplit_once('.').unwrap_or((unit, ""));
    let instead = match ext {
        "network" => format!("the network name (systemd-{stem}, unless {unit} sets NetworkName=)"),
        "container" => {
            format!("container:NAME (container:systemd-{stem}, unless {unit} sets ContainerName=)")
        }
        "volume" => format!("the volume name (systemd-{stem}, unless {unit} sets VolumeName=)"),
        "image" | "build" => format!("the image reference that {unit} pulls or builds"),
        _ => format!("the reference that {unit} provides"),
    };
    QuadletError::UnsupportedValue {
        location: entry.location().clone(),
        key: key.to_string(),
        value: value.to_string(),
        reason: format!(
            "it refers to the Quadlet unit {unit}, which only podman's generator can resolve; \
             write {instead} instead"
        ),
    }
}

/// Lexically normalises an absolute path like Go's `filepath.Clean`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if out.parent().is_some() {
                    out.pop();
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// strtol-like unsigned parse (decimal, `0x` hex, leading-`0` octal), as systemd reads numbers.
fn parse_u32(value: &str) -> Option<u32> {
    let v = value.strip_prefix('+').unwrap_or(value);
    if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16).ok()
    } else if v.len() > 1 && v.starts_with('0') {
        u32::from_str_radix(&v[1..], 8).ok()
    } else {
        v.parse().ok()
    }
}

/// podman's test for an image name that needs no short-name resolution.
fn is_unambiguous_image(name: &str) -> bool {
    if name.starts_with("sha256:")
        || (name.len() == 64 && name.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return true;
    }
    match name.split_once('/') {
        Some((domain, _)) => domain.contains(['.', ':']) || domain == "localhost",
        None => false,
    }
}

impl<'a> Converter<'a> {
    fn run(unit: UnitFile) -> Result<ContainerUnit, QuadletError> {
        let Some(container) = unit.section("Container") else {
            return Err(QuadletError::Invalid {
                location: file_location(&unit),
                message: "no [Container] section; a .container unit needs one with at least \
                          Image="
                    .to_string(),
            });
        };
        let mut conv = Converter {
            unit: &unit,
            container,
            args: Vec::new(),
            warnings: Vec::new(),
        };
        conv.check_sections()?;
        let parts = conv.convert()?;
        let Converter { args, warnings, .. } = conv;
        Ok(ContainerUnit {
            args,
            warnings,
            image: parts.image,
            rootfs: parts.rootfs,
            container_name: parts.container_name,
            service_name: parts.service_name,
            published_ports: parts.published_ports,
            labels: parts.labels,
            environment: parts.environment,
            environment_files: parts.environment_files,
            auto_update: parts.auto_update,
            health_cmd: parts.health_cmd,
            exec: parts.exec,
            unit,
        })
    }

    fn push(&mut self, arg: impl Into<String>) {
        self.args.push(arg.into());
    }

    fn push2(&mut self, flag: &str, value: impl Into<String>) {
        self.args.push(flag.to_string());
        self.args.push(value.into());
    }

    fn warn(&mut self, location: &Location, message: String) {
        self.warnings.push(Warning {
            location: location.clone(),
            message,
        });
    }

    /// Last value, podman `Lookup` style, with its entry.
    fn get(&self, key: &str) -> Option<(&'a str, &'a Entry)> {
        self.container.last(key).map(|e| (e.unquoted(), e))
    }

    fn get_nonempty(&self, key: &str) -> Option<(&'a str, &'a Entry)> {
        self.get(key).filter(|(v, _)| !v.is_empty())
    }

    fn all(&self, key: &str) -> Vec<&'a Entry> {
        self.container.all(key)
    }

    fn split(&self, entry: &Entry, mode: SplitMode) -> Result<Vec<String>, QuadletError> {
        split_words(entry.value(), mode).map_err(|reason| QuadletError::InvalidValue {
            location: entry.location().clone(),
            key: entry.key().to_string(),
            value: entry.value().to_string(),
            reason: format!("cannot split it into words: {reason}"),
        })
    }

    fn all_split(&self, key: &str, mode: SplitMode) -> Result<Vec<String>, QuadletError> {
        let mut out = Vec::new();
        for entry in self.all(key) {
            out.extend(self.split(entry, mode)?);
        }
        Ok(out)
    }

    fn invalid(entry: &Entry, reason: impl Into<String>) -> QuadletError {
        QuadletError::InvalidValue {
            location: entry.location().clone(),
            key: entry.key().to_string(),
            value: entry.value().to_string(),
            reason: reason.into(),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, QuadletError> {
        let Some((value, entry)) = self.get(key) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        parse_bool(value).map(Some).ok_or_else(|| {
            Self::invalid(
                entry,
                "not a boolean; use yes/no, true/false, on/off or 1/0",
            )
        })
    }

    /// Resolves a relative path against the unit's directory (podman's `getAbsolutePath`).
    fn absolute(&self, value: &str, entry: &Entry) -> Result<String, QuadletError> {
        let starts_with_specifier = value.starts_with('%') && !value.starts_with("%%");
        if starts_with_specifier || Path::new(value).is_absolute() {
            return Ok(value.to_string());
        }
        let dir = self.unit.path().parent().filter(|d| d.is_absolute());
        let Some(dir) = dir else {
            return Err(Self::invalid(
                entry,
                format!(
                    "“{value}” is relative, and the unit was given without an absolute path to \
                     resolve it against; load the unit from its file or write an absolute path"
                ),
            ));
        };
        Ok(clean(&dir.join(value)).to_string_lossy().into_owned())
    }

    /// Refuses what cannot be translated, before anything is converted.
    fn check_sections(&mut self) -> Result<(), QuadletError> {
        for entry in self.container.entries() {
            let key = entry.key();
            if SUPPORTED_CONTAINER_KEYS.contains(&key) {
                continue;
            }
            let hint = match key {
                "Notify" => {
                    "sd_notify handling belongs to the generated systemd service; \
                             remove it (the deploy engine runs `podman run -d` itself)"
                }
                "ReloadCmd" | "ReloadSignal" => {
                    "it becomes ExecReload= of the generated systemd service, not a podman run \
                     flag; remove it"
                }
                "Pod" | "StartWithPod" => "pods are not supported; run the container on its own",
                "GlobalArgs" | "ContainersConfModule" => {
                    "global podman options go before `run` and are not supported; remove it"
                }
                _ => {
                    "not a [Container] key this crate knows; check the spelling against \
                     podman-systemd.unit(5), or pass the podman flag through PodmanArgs="
                }
            };
            return Err(QuadletError::UnsupportedKey {
                location: entry.location().clone(),
                section: "Container".to_string(),
                key: key.to_string(),
                hint: hint.to_string(),
            });
        }

        if let Some(quadlet) = self.unit.section("Quadlet") {
            for entry in quadlet.entries() {
                if QUADLET_SECTION_KEYS.contains(&entry.key()) {
                    let value = entry.unquoted();
                    if !value.is_empty() && parse_bool(value).is_none() {
                        return Err(Self::invalid(
                            entry,
                            "not a boolean; use yes/no, true/false, on/off or 1/0",
                        ));
                    }
                    continue;
                }
                return Err(QuadletError::UnsupportedKey {
                    location: entry.location().clone(),
                    section: "Quadlet".to_string(),
                    key: entry.key().to_string(),
                    hint: "only DefaultDependencies= is known in [Quadlet]".to_string(),
                });
            }
        }

        if let Some(unit_section) = self.unit.section("Unit") {
            for key in UNIT_DEPENDENCY_KEYS {
                for entry in unit_section.all(key) {
                    for dep in self.split(entry, SplitMode::Strv)? {
                        let ext = Path::new(&dep)
                            .extension()
                            .and_then(|e| e.to_str())
                            .map(|e| format!(".{e}"));
                        if ext.is_some_and(|e| QUADLET_UNIT_EXTENSIONS.contains(&e.as_str())) {
                            return Err(QuadletError::UnsupportedValue {
                                location: entry.location().clone(),
                                key: (*key).to_string(),
                                value: entry.value().to_string(),
                                reason: format!(
                                    "[Unit] {key}= names the Quadlet unit {dep}, which podman's \
                                     generator rewrites to its service name; write the service \
                                     name instead ({}, unless {dep} sets ServiceName=)",
                                    generated_service_name(&dep)
                                ),
                            });
                        }
                    }
                }
            }
        }

        if let Some(service) = self.unit.section("Service") {
            if let Some(entry) = service.last("KillMode") {
                let v = entry.unquoted();
                if v != "mixed" && v != "control-group" {
                    return Err(Self::invalid(
                        entry,
                        "a container service only works with KillMode=mixed (the default) or \
                         KillMode=control-group",
                    ));
                }
            }
            if let Some(entry) = service.last("Type") {
                let v = entry.unquoted();
                if v != "notify" && v != "oneshot" {
                    return Err(Self::invalid(
                        entry,
                        "a container service must be Type=notify (the default) or Type=oneshot",
                    ));
                }
            }
            for key in ["User", "Group", "DynamicUser"] {
                if let Some(entry) = service.last(key) {
                    self.warn(
                        entry.location(),
                        format!(
                            "Warning: using key {key} in the Service group is not supported - \
                             use User= and Group= in the Container group instead"
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    fn convert(&mut self) -> Result<Parts, QuadletError> {
        let file = file_location(self.unit);

        // Image or Rootfs.
        let image = self.get_nonempty("Image");
        let rootfs = self.get_nonempty("Rootfs");
        match (image, rootfs) {
            (None, None) => {
                return Err(QuadletError::Invalid {
                    location: file,
                    message: "no Image or Rootfs key specified in [Container]; add \
                              Image=registry.example/app@sha256:…"
                        .to_string(),
                });
            }
            (Some(_), Some((_, entry))) => {
                return Err(QuadletError::Invalid {
                    location: entry.location().clone(),
                    message: "the Image and Rootfs keys conflict and cannot be specified \
                              together; keep one"
                        .to_string(),
                });
            }
            _ => {}
        }
        if let Some((name, entry)) = image {
            if quadlet_reference(name, &[".image", ".build"]).is_some() {
                return Err(unit_reference_error(entry, "Image", name, name));
            }
            if !is_unambiguous_image(name) {
                self.warn(
                    entry.location(),
                    format!(
                        "Warning: {} specifies the image \"{name}\" which not a fully qualified \
                         image name. This is not ideal for performance and security reasons. See \
                         the podman-pull manpage discussion of short-name-aliases.conf for \
                         details.",
                        self.unit.file_name()
                    ),
                );
            }
        }

        let container_name = self
            .get_nonempty("ContainerName")
            .map(|(v, _)| v.to_string());
        let service_name = match self.get("ServiceName") {
            Some((v, _)) => v.to_string(),
            None => {
                let name = self.unit.file_name();
                match name.rfind('.') {
                    Some(dot) if dot > 0 => name[..dot].to_string(),
                    _ => name.to_string(),
                }
            }
        };

        // Logging.
        if let Some((v, _)) = self.get_nonempty("LogDriver") {
            self.push2("--log-driver", v);
        }
        for opt in self.all_split("LogOpt", SplitMode::Strv)? {
            self.push2("--log-opt", opt);
        }
        if let Some((v, _)) = self.get_nonempty("CgroupsMode") {
            self.push2("--cgroups", v);
        }

        for (key, flag) in STRING_FLAGS {
            if let Some((v, _)) = self.get_nonempty(key) {
                self.push2(flag, v);
            }
        }
        // Newer generators pass Entrypoint as one `--entrypoint=VALUE` word, even when empty
        // (which clears the image's entrypoint).
        if let Some((v, _)) = self.get("Entrypoint") {
            self.push(format!("--entrypoint={v}"));
        }
        for (key, flag) in REPEATED_FLAGS {
            for entry in self.all(key) {
                self.push2(flag, entry.value());
            }
        }
        for (key, flag) in BOOL_FLAGS {
            match self.bool(key)? {
                Some(true) => self.push(*flag),
                Some(false) => self.push(format!("{flag}=false")),
                None => {}
            }
        }

        // Networks.
        for entry in self.all("Network") {
            let value = entry.value();
            let name = value.split_once(':').map_or(value, |(n, _)| n);
            if quadlet_reference(name, &[".network", ".container"]).is_some() {
                return Err(unit_reference_error(entry, "Network", value, name));
            }
            self.push2("--network", value);
        }

        // Security.
        if self.bool("NoNewPrivileges")? == Some(true) {
            self.push("--security-opt=no-new-privileges");
        }
        if self.bool("SecurityLabelDisable")? == Some(true) {
            self.push2("--security-opt", "label=disable");
        }
        if self.bool("SecurityLabelNested")? == Some(true) {
            self.push2("--security-opt", "label=nested");
        }
        for (key, prefix) in [
            ("SecurityLabelType", "label=type:"),
            ("SecurityLabelFileType", "label=filetype:"),
            ("SecurityLabelLevel", "label=level:"),
            ("AppArmor", "apparmor="),
        ] {
            if let Some((v, _)) = self.get_nonempty(key) {
                self.push2("--security-opt", format!("{prefix}{v}"));
            }
        }
        for entry in self.all("AddDevice") {
            for device in self.split(entry, SplitMode::Strv)? {
                if device.starts_with('-') {
                    return Err(QuadletError::UnsupportedValue {
                        location: entry.location().clone(),
                        key: "AddDevice".to_string(),
                        value: device,
                        reason: "a leading '-' makes the device optional, which needs a check of \
                                 the target host's /dev at start time; list only devices that \
                                 exist, without '-'"
                            .to_string(),
                    });
                }
                self.push2("--device", device);
            }
        }
        if let Some((v, _)) = self.get_nonempty("SeccompProfile") {
            self.push2("--security-opt", format!("seccomp={v}"));
        }
        for cap in self.all_split("DropCapability", SplitMode::Strv)? {
            self.push2("--cap-drop", cap.to_lowercase());
        }
        for cap in self.all_split("AddCapability", SplitMode::Strv)? {
            self.push2("--cap-add", cap.to_lowercase());
        }
        for sysctl in self.all_split("Sysctl", SplitMode::Strv)? {
            self.push2("--sysctl", sysctl);
        }

        let read_only = self.bool("ReadOnly")?;
        match read_only {
            Some(true) => self.push("--read-only"),
            Some(false) => self.push("--read-only=false"),
            None => {}
        }
        if self.bool("VolatileTmp")? == Some(true) && read_only != Some(true) {
            self.push2("--tmpfs", "/tmp:rw,size=512M,mode=1777");
        }

        self.user()?;
        self.user_mappings()?;
        self.volumes()?;

        let auto_update = self.get_nonempty("AutoUpdate").map(|(v, _)| v.to_string());
        if let Some(update) = &auto_update {
            self.push2("--label", format!("io.containers.autoupdate={update}"));
        }

        for entry in self.all("ExposeHostPort") {
            let port = entry.value().trim();
            if !is_port_range(port) {
                return Err(Self::invalid(
                    entry,
                    "expected a port or port range with an optional protocol, e.g. 8080, \
                     2000-3000 or 53/udp",
                ));
            }
            self.push2("--expose", port);
        }

        let mut published_ports = Vec::new();
        for entry in self.all("PublishPort") {
            let mapping =
                PortMapping::parse(entry.value()).map_err(|reason| Self::invalid(entry, reason))?;
            self.push2("--publish", entry.value());
            published_ports.push(mapping);
        }

        let environment = self.key_vals("Environment")?;
        let labels = self.key_vals("Label")?;
        let annotations = self.key_vals("Annotation")?;
        for (flag, map) in [
            ("--env", &environment),
            ("--label", &labels),
            ("--annotation", &annotations),
        ] {
            for (key, value) in map {
                match value {
                    Some(v) => self.push2(flag, format!("{key}={v}")),
                    None => self.push2(flag, key.clone()),
                }
            }
        }

        for mask in self.all_split("Mask", SplitMode::Args)? {
            self.push2("--security-opt", format!("mask={mask}"));
        }
        for unmask in self.all_split("Unmask", SplitMode::Args)? {
            self.push2("--security-opt", format!("unmask={unmask}"));
        }

        let mut environment_files = Vec::new();
        for entry in self.all("EnvironmentFile") {
            for file in self.split(entry, SplitMode::Args)? {
                let path = self.absolute(&file, entry)?;
                self.push2("--env-file", path.clone());
                environment_files.push(path);
            }
        }

        for secret in self.all_split("Secret", SplitMode::Args)? {
            self.push2("--secret", secret);
        }

        for entry in self.all("Mount") {
            for mount in self.split(entry, SplitMode::Args)? {
                let resolved = self.mount(&mount, entry)?;
                self.push2("--mount", resolved);
            }
        }

        let mut health_cmd = None;
        for (key, suffix) in HEALTH_FLAGS {
            if let Some((v, _)) = self.get_nonempty(key) {
                self.push2(&format!("--health-{suffix}"), v);
                if *key == "HealthCmd" {
                    health_cmd = Some(v.to_string());
                }
            }
        }

        for arg in self.all_split("PodmanArgs", SplitMode::Args)? {
            self.push(arg);
        }

        if let Some((name, _)) = image {
            self.push(name);
        } else if let Some((path, _)) = rootfs {
            self.push2("--rootfs", path);
        }

        let exec = match self.container.last("Exec") {
            Some(entry) => self.split(entry, SplitMode::Args)?,
            None => Vec::new(),
        };
        self.args.extend(exec.iter().cloned());

        Ok(Parts {
            image: image.map(|(v, _)| v.to_string()),
            rootfs: rootfs.map(|(v, _)| v.to_string()),
            container_name,
            service_name,
            published_ports,
            labels,
            environment,
            environment_files,
            auto_update,
            health_cmd,
            exec,
        })
    }

    fn user(&mut self) -> Result<(), QuadletError> {
        let user = self.get_nonempty("User");
        let group = self.get_nonempty("Group");
        match (user, group) {
            (None, Some((_, entry))) => Err(QuadletError::Invalid {
                location: entry.location().clone(),
                message: "invalid Group set without User; add User= (the group alone cannot be \
                          passed to --user)"
                    .to_string(),
            }),
            (Some((u, _)), None) => {
                self.push2("--user", u);
                Ok(())
            }
            (Some((u, _)), Some((g, _))) => {
                self.push2("--user", format!("{u}:{g}"));
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    fn user_mappings(&mut self) -> Result<(), QuadletError> {
        let mut defined = false;
        if let Some((v, _)) = self.get_nonempty("UserNS") {
            self.push2("--userns", v);
            defined = true;
        }
        for (key, flag) in [("UIDMap", "--uidmap"), ("GIDMap", "--gidmap")] {
            for map in self.all_split(key, SplitMode::Strv)? {
                self.push2(flag, map);
                defined = true;
            }
        }
        for (key, flag) in [("SubUIDMap", "--subuidname"), ("SubGIDMap", "--subgidname")] {
            if let Some((v, _)) = self.get_nonempty(key) {
                self.push2(flag, v);
                defined = true;
            }
        }

        let remap_entry = ["RemapUid", "RemapGid", "RemapUsers"]
            .iter()
            .find_map(|k| self.container.last(k));
        if defined {
            if let Some(entry) = remap_entry {
                return Err(QuadletError::Invalid {
                    location: entry.location().clone(),
                    message: "deprecated Remap keys are set along with explicit mapping keys \
                              (UserNS, UIDMap, GIDMap, SubUIDMap, SubGIDMap); remove RemapUsers, \
                              RemapUid and RemapGid"
                        .to_string(),
                });
            }
            return Ok(());
        }
        self.user_remap()
    }

    /// The deprecated `RemapUsers=` family.
    fn user_remap(&mut self) -> Result<(), QuadletError> {
        let uid_maps = self.all_split("RemapUid", SplitMode::Strv)?;
        let gid_maps = self.all_split("RemapGid", SplitMode::Strv)?;
        let Some(mode_entry) = self
            .container
            .last("RemapUsers")
            .filter(|e| !e.value().is_empty())
        else {
            for key in ["RemapUid", "RemapGid"] {
                if let Some(entry) = self.all(key).first() {
                    return Err(Self::invalid(entry, "set without RemapUsers="));
                }
            }
            return Ok(());
        };
        match mode_entry.value().trim() {
            "manual" => {
                for m in uid_maps {
                    self.push2("--uidmap", m);
                }
                for m in gid_maps {
                    self.push2("--gidmap", m);
                }
            }
            "auto" => {
                let mut opts: Vec<String> = uid_maps
                    .iter()
                    .map(|m| format!("uidmapping={m}"))
                    .chain(gid_maps.iter().map(|m| format!("gidmapping={m}")))
                    .collect();
                if let Some((v, entry)) = self.get_nonempty("RemapUidSize") {
                    let size = parse_u32(v)
                        .ok_or_else(|| Self::invalid(entry, "expected a non-negative number"))?;
                    if size > 0 {
                        opts.push(format!("size={size}"));
                    }
                }
                self.push2("--userns", userns_opts("auto", &opts));
            }
            "keep-id" => {
                let mut opts = Vec::new();
                for (maps, key, prefix) in [
                    (&uid_maps, "RemapUid", "uid="),
                    (&gid_maps, "RemapGid", "gid="),
                ] {
                    match maps.as_slice() {
                        [] => {}
                        [one] => opts.push(format!("{prefix}{one}")),
                        _ => {
                            let entry = self.container.last(key).unwrap_or(mode_entry);
                            return Err(Self::invalid(
                                entry,
                                "RemapUsers=keep-id supports only a single value for the UID \
                                 and GID mapping",
                            ));
                        }
                    }
                }
                self.push2("--userns", userns_opts("keep-id", &opts));
            }
            _ => {
                return Err(Self::invalid(
                    mode_entry,
                    "unsupported RemapUsers option; use auto, keep-id or manual (or better, \
                     UserNS=)",
                ));
            }
        }
        Ok(())
    }

    fn volumes(&mut self) -> Result<(), QuadletError> {
        for entry in self.all("Volume") {
            let value = entry.value();
            let parts: Vec<&str> = value.splitn(3, ':').collect();
            let (source, dest, options) = match parts.as_slice() {
                [dest] => ("", *dest, String::new()),
                [source, dest] => (*source, *dest, String::new()),
                [source, dest, options] => (*source, *dest, format!(":{options}")),
                _ => return Err(Self::invalid(entry, "expected [SOURCE:]DEST[:OPTIONS]")),
            };
            if source.is_empty() {
                self.push2("-v", dest);
                continue;
            }
            if quadlet_reference(source, &[".volume"]).is_some() {
                return Err(unit_reference_error(entry, "Volume", value, source));
            }
            let source = if source.starts_with('.') {
                self.absolute(source, entry)?
            } else {
                source.to_string()
            };
            self.push2("-v", format!("{source}:{dest}{options}"));
        }
        Ok(())
    }

    /// One `Mount=` value: podman's `resolveContainerMountParams`.
    fn mount(&self, mount: &str, entry: &Entry) -> Result<String, QuadletError> {
        let fields =
            csv::parse_record(mount).map_err(|reason| Self::invalid(entry, reason.clone()))?;
        let mut mount_type = None;
        let mut tokens = Vec::new();
        for field in fields {
            let type_value = field.strip_prefix("type=").filter(|t| !t.contains('='));
            match type_value {
                Some(t) if mount_type.is_none() => mount_type = Some(t.to_string()),
                _ => tokens.push(field),
            }
        }
        let mount_type = mount_type.unwrap_or_else(|| "volume".to_string());

        let mut source_index = None;
        for (i, token) in tokens.iter().enumerate() {
            let (key, value) = match token.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (token.as_str(), None),
            };
            if key == "source" || key == "src" {
                let Some(value) = value else {
                    return Err(Self::invalid(
                        entry,
                        "the source parameter does not include a value; write source=PATH",
                    ));
                };
                if quadlet_reference(value, &[".volume", ".image", ".build", ".artifact"]).is_some()
                {
                    return Err(unit_reference_error(entry, "Mount", mount, value));
                }
                source_index = Some((i, value.to_string()));
            }
        }

        if !matches!(mount_type.as_str(), "volume" | "bind" | "glob" | "image") {
            return Ok(mount.to_string());
        }
        match source_index {
            None if mount_type != "volume" => {
                return Err(Self::invalid(
                    entry,
                    format!(
                        "source parameter is required for mount type {mount_type}; add source=…"
                    ),
                ));
            }
            None => {}
            Some((i, source)) => {
                if source.is_empty() {
                    return Err(Self::invalid(entry, "the source parameter is empty"));
                }
                let source = if source.starts_with('.') {
                    self.absolute(&source, entry)?
                } else {
                    source
                };
                if let Some(token) = tokens.get_mut(i) {
                    *token = format!("source={source}");
                }
            }
        }
        tokens.insert(0, format!("type={mount_type}"));
        Ok(csv::write_record(&tokens))
    }

    /// `Environment=`-style `KEY=VALUE` lists: split like `Exec=`, later keys win.
    fn key_vals(&mut self, key: &str) -> Result<BTreeMap<String, Option<String>>, QuadletError> {
        let mut map = BTreeMap::new();
        for entry in self.all(key) {
            let mut saw_assignment = false;
            for word in self.split(entry, SplitMode::Args)? {
                match word.split_once('=') {
                    Some((k, v)) => {
                        map.insert(k.to_string(), Some(v.to_string()));
                        saw_assignment = true;
                    }
                    None => {
                        if saw_assignment {
                            self.warn(
                                entry.location(),
                                format!(
                                    "Warning: {key}=: token \"{word}\" has no '=' and follows a \
                                     KEY=VALUE on the same line; this usually means an earlier \
                                     value contained unquoted whitespace and was truncated. Wrap \
                                     values containing spaces in double quotes, e.g. \
                                     {key}=\"KEY=value with spaces\""
                                ),
                            );
                        }
                        map.insert(word, None);
                    }
                }
            }
        }
        Ok(map)
    }
}

/// Everything the conversion learns besides the argument list.
struct Parts {
    image: Option<String>,
    rootfs: Option<String>,
    container_name: Option<String>,
    service_name: String,
    published_ports: Vec<PortMapping>,
    labels: BTreeMap<String, Option<String>>,
    environment: BTreeMap<String, Option<String>>,
    environment_files: Vec<String>,
    auto_update: Option<String>,
    health_cmd: Option<String>,
    exec: Vec<String>,
}

/// The `.service` name podman generates for a Quadlet unit file name without `ServiceName=`.
fn generated_service_name(unit: &str) -> String {
    let (stem, ext) = unit.rsplit_once('.').unwrap_or((unit, ""));
    match ext {
        "container" | "kube" => format!("{stem}.service"),
        other => format!("{stem}-{other}.service"),
    }
}

fn userns_opts(kind: &str, opts: &[String]) -> String {
    if opts.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}:{}", opts.join(","))
    }
}

/// `PORT[-PORT][/tcp|/udp]`.
fn is_port_range(value: &str) -> bool {
    let spec = value
        .strip_suffix("/tcp")
        .or_else(|| value.strip_suffix("/udp"))
        .unwrap_or(value);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match spec.split_once('-') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(spec),
    }
}
