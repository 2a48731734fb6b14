// customml_service MODEL INPUT OUTPUT THREADS: a tiny service loop over the C++ wrapper
// (customml/customml.hpp). One model, loaded once and shared; THREADS workers take the
// requests (the rows of INPUT, raw float32) one at a time from a shared counter and predict
// each at batch 1 into its slot of the output, with buffers allocated once per worker,
// as a latency-bound service would. Writes the outputs (raw float32, row-major) to OUTPUT.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>
#include <vector>

#include "customml/customml.hpp"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: customml_service MODEL INPUT OUTPUT THREADS\n";
    return 2;
  }
  try {
    const customml::Model model(argv[1]);
    const int64_t in = model.input_dim(), out = model.output_dim();
    std::ifstream f(argv[2], std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) throw std::runtime_error(std::string("cannot read ") + argv[2]);
    if (bytes.size() % (4 * in) != 0) throw std::runtime_error("the input does not hold whole rows");
    const int64_t rows = static_cast<int64_t>(bytes.size()) / (4 * in);
    std::vector<float> x(static_cast<size_t>(rows * in)), y(static_cast<size_t>(rows * out));
    if (!bytes.empty()) std::memcpy(x.data(), bytes.data(), bytes.size());

    const int threads = std::atoi(argv[4]);
    if (threads < 1 || threads > 256) throw std::runtime_error("THREADS must be in [1, 256]");
    std::atomic<int64_t> next{0};
    std::vector<std::thread> workers;
    std::vector<std::string> errors(static_cast<size_t>(threads));
    for (size_t t = 0; t < errors.size(); ++t) {
      workers.emplace_back([&, t] {
        try {
          std::vector<float> result(static_cast<size_t>(out));  // the worker's buffer, reused
          for (int64_t r; (r = next.fetch_add(1)) < rows;) {
            model.predict(&x[static_cast<size_t>(r * in)], 1, result.data(), out);
            std::copy(result.begin(), result.end(), y.begin() + r * out);
          }
        } catch (const std::exception& e) {
          errors[t] = e.what();
        }
      });
    }
    for (std::thread& w : workers) w.join();
    for (const std::string& e : errors)
      if (!e.empty()) throw std::runtime_error(e);
    std::ofstream o(argv[3], std::ios::binary);
    o.write(reinterpret_cast<const char*>(y.data()), static_cast<std::streamsize>(y.size() * sizeof(float)));
    if (!o) throw std::runtime_error(std::string("cannot write ") + argv[3]);
    std::cout << rows << " requests on " << workers.size() << " threads -> " << argv[3] << "\n";
  } catch (const std::exception& e) {
    std::cerr << "customml_service: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
