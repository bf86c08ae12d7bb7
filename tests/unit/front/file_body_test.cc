#include "appliance/front/file_body.h"

#include <string>

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/front/test_support.h"

namespace gatecache::front {
namespace {

// Pulls every byte from `body`, `max` at a time, consuming `step` bytes of
// each chunk at most.
std::string drain(BodySource &body, size_t max, size_t step) {
  std::string out;
  for (;;) {
    BodyChunk chunk = body.next(max);
    if (chunk.state != BodyChunk::State::Data) {
      REQUIRE(chunk.state == BodyChunk::State::End);
      return out;
    }
    size_t n = std::min(chunk.size, step);
    out.append(reinterpret_cast<const char *>(chunk.data), n);
    body.consume(n);
  }
}

int open_file(const std::string &path) {
  return ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
}

TEST_CASE("file body reads small range", "[front][file_body]") {
  test::TempDir dir;
  std::string path = dir.path() + "/small";
  test::write_pattern_file(path, 10000);
  int fd = open_file(path);
  auto body = FileBody::open(fd, 100, 5000);
  ::close(fd);
  REQUIRE(body);
  CHECK_FALSE((*body)->mapped());
  CHECK((*body)->length() == 5000);
  CHECK(drain(**body, 3000, 1000) == test::pattern(10000).substr(100, 5000));
  CHECK((*body)->length() == 0);
}

TEST_CASE("file body maps large range", "[front][file_body]") {
  test::TempDir dir;
  std::string path = dir.path() + "/large";
  const size_t size = 3 * 1024 * 1024;
  test::write_pattern_file(path, size);
  int fd = open_file(path);
  auto body = FileBody::open(fd, 4097, size - 4097 - 10);
  ::close(fd);
  REQUIRE(body);
  CHECK((*body)->mapped());
  CHECK(drain(**body, 1 << 20, 70000) ==
        test::pattern(size).substr(4097, size - 4097 - 10));
}

TEST_CASE("file body of zero length ends", "[front][file_body]") {
  test::TempDir dir;
  std::string path = dir.path() + "/empty";
  test::write_pattern_file(path, 0);
  int fd = open_file(path);
  auto body = FileBody::open(fd, 0, 0);
  ::close(fd);
  REQUIRE(body);
  CHECK((*body)->length() == 0);
  CHECK((*body)->next(100).state == BodyChunk::State::End);
}

TEST_CASE("file body rejects range past end", "[front][file_body]") {
  test::TempDir dir;
  std::string path = dir.path() + "/short";
  test::write_pattern_file(path, 100);
  int fd = open_file(path);
  auto past = FileBody::open(fd, 50, 51);
  auto offset = FileBody::open(fd, 101, 0);
  ::close(fd);
  REQUIRE_FALSE(past);
  CHECK(past.error().code == ErrorCode::Invalid);
  REQUIRE_FALSE(offset);
  CHECK(offset.error().code == ErrorCode::Invalid);
}

TEST_CASE("file body outlives caller descriptor", "[front][file_body]") {
  test::TempDir dir;
  std::string path = dir.path() + "/removed";
  test::write_pattern_file(path, 600000);
  int fd = open_file(path);
  auto small = FileBody::open(fd, 0, 1000);
  auto large = FileBody::open(fd, 0, 600000);
  ::close(fd);
  ::unlink(path.c_str());
  REQUIRE(small);
  REQUIRE(large);
  CHECK(drain(**small, 4096, 4096) == test::pattern(1000));
  CHECK(drain(**large, 65536, 65536) == test::pattern(600000));
}

TEST_CASE("file body rejects a directory", "[front][file_body]") {
  test::TempDir dir;
  int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  auto body = FileBody::open(fd, 0, 0);
  ::close(fd);
  REQUIRE_FALSE(body);
  CHECK(body.error().code == ErrorCode::Invalid);
}

} // namespace
} // namespace gatecache::front
