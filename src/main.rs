//! The `nlp-serve` command: serve the API, or print its OpenAPI document.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nlp_serve::api::openapi::openapi_json;
use nlp_serve::configuration::{Settings, SettingsSources};
use nlp_serve::engine::LoadError;
use nlp_serve::model_source;
use nlp_serve::openmp;
use nlp_serve::predictors::{completion, question_answering, translation};
use nlp_serve::startup::{Application, StartupError};
use nlp_serve::telemetry;

#[derive(Parser)]
#[command(
    version,
    about = "Language models as a web API: /complete, /qa, /translate"
)]
struct Cli {
    /// A TOML file with settings that override the defaults and the profile.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// A profile from the config directory, e.g. "tiny" for the offline test models.
    #[arg(long, env = "PROFILE", global = true)]
    profile: Option<String>,
    /// Where profile files live.
    #[arg(
        long,
        env = "NLP_SERVE_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the OpenAPI document.
    Openapi,
    /// Model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Download the files of every enabled model into the hub cache (for
    /// image builds and air-gapped hosts), then exit.
    Fetch,
}

fn main() -> ExitCode {
    // Before anything else: a restart keeps nothing but the arguments.
    openmp::ensure_passive_wait_policy();
    nlp_serve::mkl::keep_linked();
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        print!("{}", openapi_json());
        return ExitCode::SUCCESS;
    }
    let sources = SettingsSources {
        profile: cli.profile.filter(|profile| !profile.is_empty()),
        config_dir: Some(cli.config_dir),
        file: cli.config,
        use_environment: true,
    };
    let settings = match Settings::load(&sources) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.logging);
    if let Some(Command::Models {
        action: ModelsAction::Fetch,
    }) = cli.command
    {
        return fetch_models(&settings);
    }
    let result = actix_web::rt::System::new().block_on(async {
        let application = Application::build(settings)?;
        tracing::info!(port = application.port(), "listening");
        application.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nerror: {error}");
            if let StartupError::ModelLoad {
                task,
                error: LoadError::HubUnreachable { .. },
            } = &error
            {
                eprintln!(
                    "\nThe model hub cannot be reached from this machine, and the model is not in the cache.\n\
                     To run fully offline with the project's generated tiny models:  make run PROFILE=tiny\n\
                     Or point the task at a local model directory, e.g. NLP_SERVE__{}__SOURCE=/path/to/model",
                    task.name().to_uppercase()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// Resolves every enabled model's files, downloading what the cache lacks.
fn fetch_models(settings: &Settings) -> ExitCode {
    let tasks = [
        (
            "completion",
            &settings.completion.model,
            &completion::FILES[..],
        ),
        ("qa", &settings.qa.model, &question_answering::FILES[..]),
        (
            "translation",
            &settings.translation.model,
            &translation::FILES[..],
        ),
    ];
    for (task, model, files) in tasks {
        if !model.enabled {
            continue;
        }
        match model_source::resolve(model, &settings.hub, files) {
            Ok(resolved) => println!("{task}: {} ready", resolved.source),
            Err(error) => {
                eprintln!("error: {task}: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
