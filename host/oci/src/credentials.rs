//! Who we are to each registry: anonymous, a username and password given
//! for one registry host, or an entry of the Docker credential file
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) that
//! `docker login`, `oras login` and `az acr login` write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::acr::{AcrTokens, EntraTokens, is_acr};
use crate::error::OciError;

/// The variable naming the directory of Docker's `config.json`.
pub const DOCKER_CONFIG_VARIABLE: &str = "DOCKER_CONFIG";

/// A username and password.
#[derive(Clone)]
struct Login {
    username: String,
    password: String,
}

/// Credentials per registry host; a host without any is accessed
/// anonymously, except an Azure Container Registry when Entra ID tokens are
/// given.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Given explicitly; these win over the credential file.
    explicit: BTreeMap<String, Login>,
    /// From the Docker credential file, by host.
    docker: BTreeMap<String, Login>,
    /// Entra ID tokens for Azure Container Registry hosts without a login.
    entra: Option<Arc<dyn EntraTokens>>,
}

/// The parts of Docker's `config.json` that hold credentials inline.
#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    /// base64 of `username:password`.
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl Credentials {
    /// Uses `username` and `password` for `registry` (a host, with its port
    /// if it has one).
    pub fn with_login(mut self, registry: &str, username: String, password: String) -> Self {
        self.explicit
            .insert(host_of(registry), Login { username, password });
        self
    }

    /// Adds the logins of the Docker credential file: `$DOCKER_CONFIG/config.json`,
    /// else `~/.docker/config.json`. A missing file adds nothing.
    pub fn with_docker_config(self) -> Result<Self, OciError> {
        let dir = std::env::var_os(DOCKER_CONFIG_VARIABLE)
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|home| home.join(".docker")));
        match dir {
            Some(dir) => self.with_docker_config_file(&dir.join("config.json")),
            None => Ok(self),
        }
    }

    /// Adds the logins of the Docker credential file at `path`, if it exists.
    pub fn with_docker_config_file(mut self, path: &Path) -> Result<Self, OciError> {
        let failed = |detail: String| OciError::DockerConfig {
            path: path.to_owned(),
            detail,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(error) => return Err(failed(error.to_string())),
        };
        let file: DockerConfigFile = serde_json::from_str(&text)
            .map_err(|error| failed(format!("not valid JSON ({error})")))?;
        for (registry, entry) in file.auths {
            let login = entry
                .into_login()
                .map_err(|detail| failed(format!("entry '{registry}': {detail}")))?;
            if let Some(login) = login {
                self.docker.insert(host_of(&registry), login);
            }
        }
        Ok(self)
    }

    /// Reaches Azure Container Registry hosts without a login with the
    /// Entra ID tokens of `tokens` (see [`AcrTokens`]).
    pub fn with_entra(mut self, tokens: Arc<dyn EntraTokens>) -> Self {
        self.entra = Some(tokens);
        self
    }

    /// The login for `registry`: `Basic` from a login, else `Anonymous`.
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        let host = host_of(registry);
        match self.explicit.get(&host).or_else(|| self.docker.get(&host)) {
            Some(login) => RegistryAuth::Basic(login.username.clone(), login.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// How to authenticate for `actions` (`pull` or `pull,push`) on
    /// `repository` of `registry`: a login if there is one, else a
    /// repository token for an Azure Container Registry when Entra ID
    /// tokens are given, else anonymously.
    pub async fn auth(
        &self,
        registry: &str,
        repository: &str,
        actions: &str,
    ) -> Result<RegistryAuth, OciError> {
        let login = self.for_registry(registry);
        match (&login, &self.entra) {
            (RegistryAuth::Anonymous, Some(entra)) if is_acr(registry) => {
                let tokens = AcrTokens::new(registry, Arc::clone(entra));
                Ok(RegistryAuth::Bearer(
                    tokens.access_token(repository, actions).await?,
                ))
            }
            _ => Ok(login),
        }
    }
}

impl DockerAuth {
    /// The login of the entry; `None` for an entry without one (its
    /// credentials live in a helper program, which is not consulted).
    fn into_login(self) -> Result<Option<Login>, String> {
        if let (Some(username), Some(password)) = (self.username, self.password) {
            return Ok(Some(Login { username, password }));
        }
        let Some(auth) = self.auth.filter(|auth| !auth.is_empty()) else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "\"auth\" is not base64".to_owned())?;
        let text = String::from_utf8(decoded).map_err(|_| "\"auth\" is not text".to_owned())?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| "\"auth\" is not base64 of username:password".to_owned())?;
        Ok(Some(Login {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    }
}

/// The host (and port) of a registry as the credential file may name it:
/// `https://myacr.azurecr.io/v2/` and `myacr.azurecr.io` are the same.
fn host_of(registry: &str) -> String {
    let without_scheme = registry
        .strip_prefix("https://")
        .or_else(|| registry.strip_prefix("http://"))
        .unwrap_or(registry);
    without_scheme
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(user, password) => Some((user, password)),
            _ => None,
        }
    }

    #[test]
    fn the_docker_file_gives_logins_by_host_and_explicit_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("ci:secret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"https://Registry.Example:5000/v2/": {{"auth": "{encoded}"}},
                    "other.example": {{"username": "u", "password": "p"}},
                    "helper.example": {{}}}}, "credsStore": "desktop"}}"#
            ),
        )
        .unwrap();
        let credentials = Credentials::default()
            .with_docker_config_file(&path)
            .unwrap();
        assert_eq!(
            basic(credentials.for_registry("registry.example:5000")),
            Some(("ci".into(), "secret".into()))
        );
        assert_eq!(
            basic(credentials.for_registry("other.example")),
            Some(("u".into(), "p".into()))
        );
        assert!(matches!(
            credentials.for_registry("helper.example"),
            RegistryAuth::Anonymous
        ));
        let credentials = credentials.with_login("other.example", "me".into(), "pw".into());
        assert_eq!(
            basic(credentials.for_registry("other.example")),
            Some(("me".into(), "pw".into()))
        );
    }

    #[test]
    fn a_broken_docker_file_is_named_and_a_missing_one_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let none = Credentials::default()
            .with_docker_config_file(&path)
            .unwrap();
        assert!(matches!(
            none.for_registry("x.example"),
            RegistryAuth::Anonymous
        ));
        std::fs::write(&path, r#"{"auths": {"x.example": {"auth": "%%%"}}}"#).unwrap();
        let error = Credentials::default()
            .with_docker_config_file(&path)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("config.json") && error.contains("'x.example'"),
            "{error}"
        );
    }
}
