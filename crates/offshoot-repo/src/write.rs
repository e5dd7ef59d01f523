//! Writing commits straight into the object database, for `offshoot demo` and the benchmarks'
//! generated projects. Tests build their fixtures with real `git` instead.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{FileMode, Oid, Repository, Signature};

use crate::{git_error, GitRepository, RepoError};

/// A file tree: `/`-separated path to content.
pub type Tree = BTreeMap<String, Vec<u8>>;

impl GitRepository {
    /// Creates a new repository (with a working directory) at `path`.
    pub fn init(path: &Path, initial_branch: &str) -> Result<GitRepository, RepoError> {
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head(initial_branch);
        Repository::init_opts(path, &options).map(|repo| GitRepository { repo }).map_err(git_error)
    }

    /// Commits `files` as the whole tree on `branch`, on top of the branch's tip or, for a new
    /// branch, of `start_point`. Returns the new commit's SHA.
    pub fn commit_tree(
        &self,
        branch: &str,
        start_point: Option<&str>,
        files: &Tree,
        message: &str,
        author: (&str, &str),
    ) -> Result<String, RepoError> {
        let reference = format!("refs/heads/{branch}");
        let parent = match self.repo.find_reference(&reference) {
            Ok(r) => Some(r.peel_to_commit().map_err(git_error)?),
            Err(_) => match start_point {
                Some(rev) => Some(
                    self.repo
                        .revparse_single(rev)
                        .and_then(|o| o.peel_to_commit())
                        .map_err(git_error)?,
                ),
                None => None,
            },
        };
        let tree_id = self.write_tree(files)?;
        let tree = self.repo.find_tree(tree_id).map_err(git_error)?;
        let signature = Signature::now(author.0, author.1).map_err(git_error)?;
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self
            .repo
            .commit(Some(&reference), &signature, &signature, message, &tree, &parents)
            .map_err(git_error)?;
        Ok(id.to_string())
    }

    fn write_tree(&self, files: &Tree) -> Result<Oid, RepoError> {
        // Group by first path component; recurse into folders.
        let mut here: BTreeMap<&str, &[u8]> = BTreeMap::new();
        let mut folders: BTreeMap<&str, Tree> = BTreeMap::new();
        for (path, content) in files {
            match path.split_once('/') {
                Some((folder, rest)) => {
                    folders.entry(folder).or_default().insert(rest.to_owned(), content.clone());
                }
                None => {
                    here.insert(path, content);
                }
            }
        }
        let mut builder = self.repo.treebuilder(None).map_err(git_error)?;
        for (name, content) in here {
            let blob = self.repo.blob(content).map_err(git_error)?;
            builder.insert(name, blob, FileMode::Blob.into()).map_err(git_error)?;
        }
        for (name, subtree) in folders {
            let id = self.write_tree(&subtree)?;
            builder.insert(name, id, FileMode::Tree.into()).map_err(git_error)?;
        }
        builder.write().map_err(git_error)
    }

    /// Points the working directory and HEAD at `branch` (a forced checkout).
    pub fn checkout(&self, branch: &str) -> Result<(), RepoError> {
        let reference = format!("refs/heads/{branch}");
        self.repo.set_head(&reference).map_err(git_error)?;
        self.repo
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .map_err(git_error)
    }
}
