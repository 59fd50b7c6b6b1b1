//! The worker Deployment through the Kubernetes API: its replicas and the shape of its pods,
//! the `scale` subresource, and each pod's deletion cost. Exactly what the RBAC in
//! `manifests/extras/autoscaling.yaml` grants, nothing more.

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::schedule::demand::Shape;

/// The annotation the ReplicaSet controller reads to choose which pods go first on a scale-in.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// What the master acts on.
#[derive(Clone)]
pub struct WorkerDeployment {
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    pub namespace: String,
    pub name: String,
}

/// The Deployment as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub replicas: u32,
    /// What one pod offers, from its container's limits (else requests), as a worker offers
    /// them: whole cores (rounded down), MiB.
    pub shape: Option<Shape>,
}

impl WorkerDeployment {
    /// Through the pod's own service account (in-cluster), or a kubeconfig outside.
    pub async fn connect(namespace: &str, name: &str) -> Result<Self, kube::Error> {
        let client = Client::try_default().await?;
        Ok(Self {
            deployments: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    pub async fn read(&self) -> Result<Read, kube::Error> {
        let d = self.deployments.get(&self.name).await?;
        let spec = d.spec.unwrap_or_default();
        let replicas = u32::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        let container = spec
            .template
            .spec
            .and_then(|p| p.containers.into_iter().next());
        let shape = container.and_then(|c| {
            let resources = c.resources?;
            let pick = |key: &str| {
                resources
                    .limits
                    .as_ref()
                    .and_then(|l| l.get(key))
                    .or_else(|| resources.requests.as_ref().and_then(|r| r.get(key)))
                    .cloned()
            };
            let cores = cpu_cores(&pick("cpu")?)?;
            let memory_mb = memory_mib(&pick("memory")?)?;
            Some(Shape { cores, memory_mb })
        });
        Ok(Read { replicas, shape })
    }

    /// Sets the replicas through the `scale` subresource.
    pub async fn scale_to(&self, replicas: u32) -> Result<(), kube::Error> {
        let patch = json!({ "spec": { "replicas": replicas } });
        self.deployments
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Marks how much removing `pod` would cost: the ReplicaSet removes the cheapest first.
    pub async fn set_deletion_cost(&self, pod: &str, cost: i64) -> Result<(), kube::Error> {
        let patch = json!({ "metadata": { "annotations": { DELETION_COST: cost.to_string() } } });
        self.pods
            .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// A quantity as a number: `2`, `1500m`, `4Gi`, `512M`, `1e3`.
fn quantity(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

fn cpu_cores(q: &Quantity) -> Option<u32> {
    let cpus = quantity(q)?;
    (cpus >= 1.0).then(|| cpus.floor() as u32)
}

fn memory_mib(q: &Quantity) -> Option<u64> {
    let bytes = quantity(q)?;
    (bytes >= 1024.0 * 1024.0).then(|| (bytes / (1024.0 * 1024.0)).floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_a_worker_offers_them() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(cpu_cores(&q("2")), Some(2));
        assert_eq!(cpu_cores(&q("1500m")), Some(1));
        assert_eq!(cpu_cores(&q("500m")), None);
        assert_eq!(memory_mib(&q("4Gi")), Some(4096));
        assert_eq!(memory_mib(&q("512Mi")), Some(512));
        assert_eq!(memory_mib(&q("1G")), Some(953));
        assert_eq!(memory_mib(&q("1e9")), Some(953));
        assert_eq!(memory_mib(&q("lots")), None);
    }
}
