//! What the orchestrator and its agents say to each other about desired
//! state, kept in one place so both ends agree: the document a node is
//! sent (its deployments at the versions assigned to it), the short id
//! that names such a document, content digests of the files it carries,
//! and the checks both ends apply to a deployment's config and file paths.
//! client.rs is the HTTP/2 client both use: agents to reach the
//! orchestrator, orchestrators (Raft members) to reach each other.

pub mod client;
pub mod desired;

pub use desired::{
    DeploymentState, DesiredState, check_file_path, desired_id, digest_of, parse_digest, role_sections, with_files_dir,
};
