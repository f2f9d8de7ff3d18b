// cnnc plot METRICS.jsonl -o curves.svg: the training curves of a `cnnc train --metrics` file,
// loss and accuracy per epoch, train and validation, as an SVG a web browser opens. The chart
// and the file's reading are in support/chart.h.
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "driver/commands.h"
#include "support/chart.h"
#include "support/diagnostics.h"
#include "support/text.h"

namespace cnnc {

void add_plot_command(CLI::App& app, CommandAction& action) {
  struct Options {
    std::string metrics, output, title;
    bool quiet = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* plot = app.add_subcommand(
      "plot",
      "Draw the training curves of a metrics file (cnnc train --metrics): loss and accuracy per epoch, train "
      "and validation, as SVG");
  plot->add_option("metrics", options->metrics, "Metrics file (JSON Lines, one object per epoch)")->required();
  plot->add_option("-o,--output", options->output, "SVG file to write (default: the metrics file with .svg)");
  plot->add_option("--title", options->title,
                   "Title (default: '<model>: training curves' where the file names its model, else the file's name)");
  plot->add_flag("-q,--quiet", options->quiet, "Print only errors");
  plot->callback([options, &action] {
    action = [options] {
      namespace fs = std::filesystem;
      std::string output = options->output;
      if (output.empty()) output = fs::path(options->metrics).replace_extension(".svg").string();
      chart::check_svg_path(output);
      std::error_code error;
      if (fs::exists(output, error) && fs::equivalent(output, options->metrics, error))
        throw UserError(SourceLoc{output, 0, 0}, "is the metrics file itself; give another -o FILE.svg");
      chart::Metrics metrics = chart::read_metrics(options->metrics);
      std::string title = options->title;
      if (title.empty() && metrics.model.empty())
        title = fmt::format("training curves: {}", fs::path(options->metrics).filename().string());
      chart::write_svg(output, chart::training_curves_svg(metrics, title));
      if (!options->quiet) {
        bool validation = false;
        for (const chart::EpochRow& row : metrics.epochs) validation = validation || row.val_loss || row.val_accuracy;
        std::cout << fmt::format("Wrote {}: loss and accuracy over {}, train{}\n", output,
                                 plural(int64_t(metrics.epochs.size()), "epoch"), validation ? " and validation" : "");
      }
      return 0;
    };
  });
}

}  // namespace cnnc
