// protocol/heap_optional.hpp: the optional the machine keeps its rarely-set holds in (a fault's
// held command or decision) behaves as std::optional does where the machine uses it.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <utility>

#include "protocol/heap_optional.hpp"

namespace mailtap::protocol {
namespace {

TEST(HeapOptional, EmptyUntilGivenAValueAndEmptyAgainOnceReset) {
  heap_optional<std::string> held;
  EXPECT_FALSE(held);
  EXPECT_FALSE(held.has_value());
  held = std::string("RCPT TO:<a@example.org>");
  ASSERT_TRUE(held);
  EXPECT_EQ(*held, "RCPT TO:<a@example.org>");
  EXPECT_EQ(held->size(), 23u);
  held.reset();
  EXPECT_FALSE(held);
  held.emplace(3, 'x');
  EXPECT_EQ(*held, "xxx");
  held = std::nullopt;
  EXPECT_FALSE(held);
}

TEST(HeapOptional, ACopyHasItsOwnValue) {
  heap_optional<std::string> a;
  a = std::string("250 ok");
  heap_optional<std::string> b = a;
  *b = "451 later";
  EXPECT_EQ(*a, "250 ok");
  EXPECT_EQ(*b, "451 later");
  heap_optional<std::string> c;
  c = b;
  b.reset();
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, "451 later");
  c = heap_optional<std::string>();   // a copy of an empty one is empty
  EXPECT_FALSE(c);
}

TEST(HeapOptional, ExchangedForNulloptGivesTheValueAndLeavesItEmpty) {
  heap_optional<std::string> delay;
  delay = std::string("banner delay");
  const std::string taken = *std::exchange(delay, std::nullopt);
  EXPECT_EQ(taken, "banner delay");
  EXPECT_FALSE(delay);
}

TEST(HeapOptional, EmptyItCostsAPointer) {
  struct large {
    char bytes[320];
  };
  EXPECT_EQ(sizeof(heap_optional<large>), sizeof(void*));
  EXPECT_GT(sizeof(std::optional<large>), 320u);
}

}  // namespace
}  // namespace mailtap::protocol
