// The cnnc subcommands. Each file in driver/ adds one subcommand to the CLI app; main.cpp runs it.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace cnnc {

// A subcommand's action: returns the process exit status.
using CommandAction = std::function<int()>;

void add_check_command(CLI::App& app, CommandAction& action);
void add_build_command(CLI::App& app, CommandAction& action);
void add_predict_command(CLI::App& app, CommandAction& action);
void add_export_command(CLI::App& app, CommandAction& action);
void add_train_command(CLI::App& app, CommandAction& action);
void add_eval_command(CLI::App& app, CommandAction& action);
void add_bench_command(CLI::App& app, CommandAction& action);
void add_tune_command(CLI::App& app, CommandAction& action);
void add_import_command(CLI::App& app, CommandAction& action);
void add_plot_command(CLI::App& app, CommandAction& action);

}  // namespace cnnc
