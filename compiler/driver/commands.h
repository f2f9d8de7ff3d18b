// The cnnc subcommands. Each file in driver/ adds one subcommand to the CLI app; main.cpp runs it.
#pragma once

#include <exception>
#include <functional>
#include <string>

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

// Prints an error a command threw, each line after `prefix` ("rank 1: " under mpirun), and
// returns the exit status for it: 1 a user error (bad model, data, flag value, or a path that
// cannot be read or written), 3 an internal error (a bug in cnnc) or out of memory.
int report_error(std::exception_ptr error, const std::string& prefix = "");

}  // namespace cnnc
