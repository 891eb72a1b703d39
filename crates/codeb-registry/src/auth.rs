//! Registry credentials and how they are chosen from the environment.

use codeb_core::vars::{
    CODEB_REGISTRY_PASSWORD, CODEB_REGISTRY_TOKEN, CODEB_REGISTRY_USERNAME, GITHUB_TOKEN,
};
use codeb_secret::Secret;
use oci_client::secrets::RegistryAuth;

use crate::ImageRef;

/// GitHub's container registry.
pub const GHCR: &str = "ghcr.io";
// Credentials come from codeb_core::vars: CODEB_REGISTRY_TOKEN (preferred; ghcr.io only),
// GITHUB_TOKEN (ghcr.io only, never sent to any other registry), CODEB_REGISTRY_USERNAME and
// CODEB_REGISTRY_PASSWORD (basic credentials; the user name also goes with a ghcr.io token).
/// The user name sent with an [`Auth::Bearer`] token.
pub const TOKEN_USERNAME: &str = "codeb";

/// How to authenticate to a registry. `Debug` never shows the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Anonymous,
    /// A registry token without a user name (GHCR: a GitHub token). It is sent the way
    /// `docker login` sends one: as the password of basic credentials for the user
    /// [`TOKEN_USERNAME`], which the registry's token endpoint exchanges for a bearer token.
    Bearer(Secret),
    /// A user name and password (or a token as the password).
    Basic {
        username: String,
        password: Secret,
    },
}

impl Auth {
    /// Chooses credentials for `image` from the process environment; see [`Auth::from_lookup`].
    pub fn from_env(image: &ImageRef) -> Auth {
        Self::from_lookup(image, |name| std::env::var(name).ok())
    }

    /// Chooses credentials for `image`, reading variables through `lookup` (empty counts as
    /// unset):
    /// - ghcr.io: the token from `CODEB_REGISTRY_TOKEN`, else `GITHUB_TOKEN`; with
    ///   `CODEB_REGISTRY_USERNAME` it is the password of that user, without it an
    ///   [`Auth::Bearer`]. With no token: `CODEB_REGISTRY_USERNAME` + `CODEB_REGISTRY_PASSWORD`
    ///   if both are set, else anonymous.
    /// - any other registry: `CODEB_REGISTRY_USERNAME` + `CODEB_REGISTRY_PASSWORD` if both are
    ///   set, else anonymous. Tokens are never sent to them.
    pub fn from_lookup(image: &ImageRef, lookup: impl Fn(&str) -> Option<String>) -> Auth {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let username = var(CODEB_REGISTRY_USERNAME);
        if image.registry().eq_ignore_ascii_case(GHCR) {
            let token = var(CODEB_REGISTRY_TOKEN).or_else(|| var(GITHUB_TOKEN));
            if let Some(token) = token {
                let token = Secret::new(token.trim());
                return match username {
                    Some(username) => Auth::Basic {
                        username,
                        password: token,
                    },
                    None => Auth::Bearer(token),
                };
            }
        }
        match (username, var(CODEB_REGISTRY_PASSWORD)) {
            (Some(username), Some(password)) => Auth::Basic {
                username,
                password: Secret::new(password),
            },
            _ => Auth::Anonymous,
        }
    }

    /// Which credentials these are, for messages: never the secret.
    pub fn describe(&self) -> String {
        match self {
            Auth::Anonymous => "anonymous access".to_string(),
            Auth::Bearer(_) => format!("a token (as user {TOKEN_USERNAME:?})"),
            Auth::Basic { username, .. } => format!("user {username:?} and its password"),
        }
    }

    pub(crate) fn secret(&self) -> Option<&Secret> {
        match self {
            Auth::Anonymous => None,
            Auth::Bearer(secret) => Some(secret),
            Auth::Basic { password, .. } => Some(password),
        }
    }

    /// oci-client's form. Its own `Bearer` sends the token as is, which GHCR does not accept for
    /// a GitHub token: the token goes through the basic -> token exchange instead.
    pub(crate) fn to_oci(&self) -> RegistryAuth {
        match self {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Bearer(token) => {
                RegistryAuth::Basic(TOKEN_USERNAME.to_string(), token.expose().to_string())
            }
            Auth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.expose().to_string())
            }
        }
    }

    /// What to do when the registry refuses these credentials.
    pub(crate) fn hint(&self, image: &ImageRef) -> String {
        let mut hint = if image.registry().eq_ignore_ascii_case(GHCR) {
            format!(
                "set {CODEB_REGISTRY_TOKEN} to a GitHub token with read:packages (in Actions, \
                 {GITHUB_TOKEN} with `packages: read` works for the repository's own packages)"
            )
        } else {
            format!(
                "set {CODEB_REGISTRY_USERNAME} and {CODEB_REGISTRY_PASSWORD} to credentials that may \
                 pull {}",
                image.repository()
            )
        };
        if matches!(self, Auth::Anonymous) {
            hint.push_str("; the repository may also be private or not exist");
        } else {
            hint.push_str("; check that the credentials are current and may read this repository");
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn select(image: &str, vars: &[(&str, &str)]) -> Auth {
        let image = ImageRef::parse(image).expect("valid reference");
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Auth::from_lookup(&image, |name| vars.get(name).cloned())
    }

    fn basic(username: &str, password: &str) -> Auth {
        Auth::Basic {
            username: username.into(),
            password: Secret::new(password),
        }
    }

    #[test]
    fn ghcr_prefers_the_codeb_token_then_the_github_token() {
        let ghcr = "ghcr.io/org/app:v1";
        assert_eq!(select(ghcr, &[]), Auth::Anonymous);
        assert_eq!(
            select(ghcr, &[(GITHUB_TOKEN, "gh")]),
            Auth::Bearer(Secret::new("gh"))
        );
        assert_eq!(
            select(ghcr, &[(GITHUB_TOKEN, "gh"), (CODEB_REGISTRY_TOKEN, "cb")]),
            Auth::Bearer(Secret::new("cb"))
        );
        assert_eq!(
            select(ghcr, &[(GITHUB_TOKEN, "gh"), (CODEB_REGISTRY_TOKEN, "")]),
            Auth::Bearer(Secret::new("gh")),
            "an empty variable counts as unset"
        );
        assert_eq!(
            select(ghcr, &[(CODEB_REGISTRY_TOKEN, " cb\n")]),
            Auth::Bearer(Secret::new("cb")),
            "a token is trimmed"
        );
        assert_eq!(
            select(
                ghcr,
                &[
                    (CODEB_REGISTRY_TOKEN, "cb"),
                    (CODEB_REGISTRY_USERNAME, "octocat")
                ]
            ),
            basic("octocat", "cb"),
            "a user name goes with the token"
        );
        assert_eq!(
            select(
                ghcr,
                &[
                    (CODEB_REGISTRY_USERNAME, "octocat"),
                    (CODEB_REGISTRY_PASSWORD, "pw")
                ]
            ),
            basic("octocat", "pw")
        );
        assert_eq!(
            select("GHCR.IO/org/app:v1", &[(GITHUB_TOKEN, "gh")]),
            Auth::Bearer(Secret::new("gh"))
        );
    }

    #[test]
    fn other_registries_get_basic_credentials_and_never_a_token() {
        for image in [
            "127.0.0.1:15000/org/app:v1",
            "registry.example.com/org/app:v1",
            "ghcr.io.evil.example/org/app:v1",
            "ghcr.io:8443/org/app:v1",
        ] {
            assert_eq!(
                select(image, &[(GITHUB_TOKEN, "gh"), (CODEB_REGISTRY_TOKEN, "cb")]),
                Auth::Anonymous,
                "{image}"
            );
            assert_eq!(
                select(
                    image,
                    &[
                        (CODEB_REGISTRY_USERNAME, "u"),
                        (CODEB_REGISTRY_PASSWORD, "p")
                    ]
                ),
                basic("u", "p"),
                "{image}"
            );
            assert_eq!(
                select(image, &[(CODEB_REGISTRY_USERNAME, "u")]),
                Auth::Anonymous,
                "a user name without a password is not enough: {image}"
            );
            assert_eq!(
                select(image, &[(CODEB_REGISTRY_PASSWORD, "p")]),
                Auth::Anonymous,
                "{image}"
            );
        }
    }

    #[test]
    fn debug_and_describe_never_show_the_secret() {
        let secret = "s3cr3t-value";
        for auth in [Auth::Bearer(Secret::new(secret)), basic("alice", secret)] {
            let shown = format!("{auth:?} {auth:#?} {}", auth.describe());
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert!(format!("{:?}", basic("alice", secret)).contains("alice"));
    }

    #[test]
    fn oci_form_sends_a_token_as_a_password() {
        assert_eq!(
            Auth::Bearer(Secret::new("t")).to_oci(),
            RegistryAuth::Basic(TOKEN_USERNAME.into(), "t".into())
        );
        assert_eq!(Auth::Anonymous.to_oci(), RegistryAuth::Anonymous);
        assert_eq!(
            basic("u", "p").to_oci(),
            RegistryAuth::Basic("u".into(), "p".into())
        );
    }
}
