//! `we domain`: DNS (PowerDNS) and HTTPS (Caddy) for a project's production port, set up,
//! listed and removed through the control plane (`/api/v1/domains`). Names are checked here
//! first with the server's own rules (`codeb_dns::DomainName`), so a bad name exits 2 before
//! anything is sent.

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use codeb_api::domain::{DomainRemoved, DomainSetup, DomainSetupResult, DomainStatus, Zone};
use codeb_api::paths;
use codeb_core::ProjectName;
use codeb_dns::DomainName;
use reqwest::Method;

use crate::client::Api;
use crate::exit::{Exit, WeError};
use crate::output::{Cell, Out, Style};

pub const AFTER_HELP: &str = "\
Examples:
  we domain zones                                   # the zones codeb manages
  we domain setup myapp --domain myapp.codeb.kr     # A/AAAA records, then the HTTPS route
  we domain list                                    # DNS, route and certificate of each
  we domain remove myapp.codeb.kr --project myapp

Names: uppercase is lowered, a trailing dot dropped, an internationalised name is converted
to punycode (bücher.codeb.kr is xn--bcher-kva.codeb.kr); wildcards, underscores, labels over
63 bytes and labels starting or ending with '-' are refused. A setup that is in place
changes nothing. If PowerDNS fails, no Caddy route is added; if Caddy fails, the DNS
change is rolled back (or the answer names the command that finishes it).";

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Point a domain at a project: DNS records in PowerDNS, then a Caddy HTTPS route to the
    /// project's production port (admins)
    Setup(SetupArgs),
    /// Every domain with its project, DNS answer, route and certificate expiry
    List,
    /// Remove a domain's route and records (admins)
    Remove(RemoveArgs),
    /// The zones codeb manages, as PowerDNS holds them
    Zones,
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The project (in the registry, with a production port in the manifest)
    pub project: String,
    /// The host name, inside a managed zone (`we domain zones`)
    #[arg(long, value_name = "NAME")]
    pub domain: String,
    /// Serve it over HTTPS with an automatic certificate (always on; accepted for the
    /// manual's `--ssl`)
    #[arg(long)]
    pub ssl: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub domain: String,
    /// Refuse unless this project owns the domain
    #[arg(long, value_name = "PROJECT")]
    pub project: Option<String>,
}

fn domain_name(s: &str) -> Result<DomainName, WeError> {
    DomainName::parse(s).map_err(|e| WeError::Usage(e.to_string()))
}

fn project_name(s: &str) -> Result<ProjectName, WeError> {
    ProjectName::new(s).map_err(|e| WeError::Usage(format!("project `{s}`: {e}")))
}

fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

pub async fn run(cmd: DomainCommand, api: &Api, out: &Out) -> Result<Exit, WeError> {
    match cmd {
        DomainCommand::Setup(a) => setup(a, api, out).await,
        DomainCommand::List => list(api, out).await,
        DomainCommand::Remove(a) => remove(a, api, out).await,
        DomainCommand::Zones => zones(api, out).await,
    }
}

async fn setup(a: SetupArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let project = project_name(&a.project)?;
    let name = domain_name(&a.domain)?;
    if name.as_str() != a.domain.trim().trim_end_matches('.') {
        out.info(&format!("domain {:?} is {name}", a.domain));
    }
    let progress = out.progress(&format!("setting up {name} for {project}"));
    let r: Result<DomainSetupResult, WeError> = api
        .post(
            paths::DOMAINS,
            &DomainSetup {
                project: project.as_str().to_owned(),
                domain: name.as_str().to_owned(),
            },
        )
        .await;
    drop(progress);
    let r = r?;
    if out.json {
        out.json_line(&r)?;
    } else {
        for s in &r.steps {
            out.info(s);
        }
        out.line(&format!(
            "https://{} -> {} (port {}){}",
            r.domain.domain,
            r.domain.project,
            r.domain.upstream_port,
            if r.changed { "" } else { ": already in place" }
        ))?;
    }
    Ok(Exit::Ok)
}

async fn remove(a: RemoveArgs, api: &Api, out: &Out) -> Result<Exit, WeError> {
    let name = domain_name(&a.domain)?;
    let mut path = format!("{}/{}", paths::DOMAINS, name.as_str());
    if let Some(p) = &a.project {
        path.push_str(&format!("?project={}", project_name(p)?.as_str()));
    }
    let r: DomainRemoved = api
        .send_json(Method::DELETE, &path, None::<&()>)
        .await?
        .body;
    if out.json {
        out.json_line(&r)?;
    } else {
        for s in &r.steps {
            out.info(s);
        }
        out.line(&format!(
            "removed {} (was {})",
            r.domain.domain, r.domain.project
        ))?;
    }
    Ok(Exit::Ok)
}

async fn list(api: &Api, out: &Out) -> Result<Exit, WeError> {
    let all: Vec<DomainStatus> = api.get(paths::DOMAINS, &[]).await?;
    let healthy = all.iter().all(|d| d.dns == "ok" && d.route == "present");
    if out.json {
        out.json_line(&all)?;
    } else {
        let style = |ok: bool| if ok { Style::Plain } else { Style::Bad };
        let rows: Vec<Vec<Cell>> = all
            .iter()
            .map(|d| {
                vec![
                    d.domain.domain.clone().into(),
                    d.domain.project.clone().into(),
                    Cell::new(
                        if d.dns == "ok" {
                            format!("ok {}", d.dns_answer.join(","))
                        } else {
                            d.dns.clone()
                        },
                        style(d.dns == "ok"),
                    ),
                    Cell::new(d.route.clone(), style(d.route == "present")),
                    match d.cert_expires_ms {
                        Some(ms) => Cell::new(when(ms), Style::Plain),
                        None => Cell::new(d.cert.clone(), Style::Bad),
                    },
                ]
            })
            .collect();
        out.table(
            &["domain", "project", "dns", "route", "certificate expires"],
            &rows,
        )?;
    }
    Ok(if healthy { Exit::Ok } else { Exit::Wrong })
}

async fn zones(api: &Api, out: &Out) -> Result<Exit, WeError> {
    let zones: Vec<Zone> = api.get(paths::DOMAIN_ZONES, &[]).await?;
    if out.json {
        out.json_line(&zones)?;
    } else {
        let rows: Vec<Vec<Cell>> = zones
            .iter()
            .map(|z| {
                vec![
                    z.name.clone().into(),
                    Cell::new(
                        match (&z.error, z.in_pdns) {
                            (Some(e), _) => format!("error: {e}"),
                            (None, true) => format!("ok (serial {})", z.serial.unwrap_or(0)),
                            (None, false) => "missing in PowerDNS".into(),
                        },
                        if z.in_pdns { Style::Plain } else { Style::Bad },
                    ),
                    z.domains.to_string().into(),
                    if z.previews { "yes" } else { "" }.into(),
                ]
            })
            .collect();
        out.table(&["zone", "powerdns", "domains", "previews"], &rows)?;
    }
    Ok(if zones.iter().all(|z| z.in_pdns) {
        Exit::Ok
    } else {
        Exit::Wrong
    })
}
