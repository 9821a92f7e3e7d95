//! The tasks the service offers.

use std::fmt;

/// One served task, each backed by one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    Completion,
    QuestionAnswering,
    Translation,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::Completion, Task::QuestionAnswering, Task::Translation];

    /// The short name used in configuration sections, metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Task::Completion => "completion",
            Task::QuestionAnswering => "qa",
            Task::Translation => "translation",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
