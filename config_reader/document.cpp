// File reading with a cap and parsing. Regular files only: a FIFO without a writer would block
// open(2) (and with it a SIGHUP reload, or an admin request), a device never ends.
#include "config_reader/document.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "config_reader/key_depth.hpp"
#include "config_reader/table_reader.hpp"
#include "protocol/terminal_text.hpp"

namespace mailtap::config_reader {

file_text read_file(const std::filesystem::path& file, std::size_t max_bytes) {
  file_text out;
  // O_NONBLOCK: opening a FIFO returns at once; fstat then refuses it.
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    out.problem = std::generic_category().message(errno);
    return out;
  }
  out.opened = true;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    out.problem = S_ISDIR(st.st_mode) ? std::generic_category().message(EISDIR) : "not a regular file";
    ::close(fd);
    return out;
  }
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      out.problem = std::generic_category().message(errno);
      break;
    }
    if (n == 0) break;
    out.text.append(buf, static_cast<std::size_t>(n));
    if (out.text.size() > max_bytes) {
      out.problem = "file larger than " + std::to_string(max_bytes) + " bytes";
      break;
    }
  }
  ::close(fd);
  if (!out.ok()) out.text.clear();
  return out;
}

std::optional<toml::table> parse(std::string_view text, std::string_view source_name, std::string& error) {
  if (const auto line = line_nested_too_deep(text)) {
    error = echo_path(source_name) + ":" + std::to_string(*line) + ": more than " + std::to_string(max_dots_per_line) +
            " dots outside strings in one line: a key or table nested that deep is refused";
    return std::nullopt;
  }
  try {
    return toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    error = protocol::terminal_safe(echo_path(source_name) + ":" + std::to_string(e.source().begin.line) + ": " +
                                    one_line(e.description()));
  }
  return std::nullopt;
}

}  // namespace mailtap::config_reader
