// cnnc: the command-line driver. Exit status: 0 success, 1 user error (bad model, data or flag
// value), 2 bad command line, 3 internal error (a bug in cnnc).
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>

#include "codegen/codegen.h"
#include "driver/commands.h"
#include "support/diagnostics.h"

#ifndef CNNC_VERSION
#define CNNC_VERSION "unknown"
#endif

int main(int argc, char** argv) {
  CLI::App app{"cnnc: a compiler for convolutional neural networks described in YAML.\n"
               "Documentation: docs/dsl.md (model language), docs/architecture.md.",
               "cnnc"};
  app.set_version_flag("--version", std::string("cnnc ") + CNNC_VERSION);
  app.require_subcommand(1);
  cnnc::CommandAction action;
  cnnc::add_check_command(app, action);
  cnnc::add_build_command(app, action);
  cnnc::add_train_command(app, action);
  cnnc::add_eval_command(app, action);
  cnnc::add_predict_command(app, action);
  cnnc::add_export_command(app, action);
  cnnc::add_tune_command(app, action);
  cnnc::add_import_command(app, action);
  cnnc::add_bench_command(app, action);
  cnnc::add_plot_command(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int status = app.exit(error);
    return status == 0 ? 0 : 2;
  }
  try {
    cnnc::check_op_registry();  // every op has every phase its traits call for
    return action ? action() : 0;
  } catch (...) {
    return cnnc::report_error(std::current_exception());
  }
}

namespace cnnc {

int report_error(std::exception_ptr error, const std::string& prefix) {
  try {
    std::rethrow_exception(error);
  } catch (const UserError& error) {
    std::cerr << prefix << error.formatted() << "\n";
    return 1;
  } catch (const std::filesystem::filesystem_error& error) {
    // A path the user gave (or the cache) cannot be written or read: not a bug in cnnc.
    std::cerr << prefix << (error.path1().empty() ? std::string("cnnc") : error.path1().string())
              << ": error: " << error.code().message() << " (" << error.what() << ")\n";
    return 1;
  } catch (const InternalError& error) {
    std::cerr << prefix << error.what() << "\n";
    return 3;
  } catch (const std::bad_alloc&) {
    std::cerr << prefix << "cnnc: error: out of memory\n";
    return 3;
  } catch (const std::exception& error) {
    std::cerr << prefix << "internal error: " << error.what() << " (this is a bug in cnnc)\n";
    return 3;
  } catch (...) {
    std::cerr << prefix << "internal error: an unknown exception (this is a bug in cnnc)\n";
    return 3;
  }
}

}  // namespace cnnc
