// heap_optional<T>: an optional whose value lives on the heap. For a member most sessions never
// set (a fault's held command or decision): empty, it costs a pointer rather than the value's
// size in every session. A session held idle is measured by README "Performance" (W6, memory
// per idle session); std::optional<fault_decision> alone is 320 bytes.
// The subset of std::optional's interface the machine uses: test, dereference, assign a value
// or std::nullopt, reset, emplace; copies copy the value.
#pragma once
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace mailtap::protocol {

template <typename T>
class heap_optional {
 public:
  heap_optional() noexcept = default;
  heap_optional(std::nullopt_t) noexcept {}
  heap_optional(const heap_optional& other) : value_(other.value_ ? std::make_unique<T>(*other.value_) : nullptr) {}
  heap_optional(heap_optional&&) noexcept = default;
  heap_optional& operator=(const heap_optional& other) {
    if (this != &other) value_ = other.value_ ? std::make_unique<T>(*other.value_) : nullptr;
    return *this;
  }
  heap_optional& operator=(heap_optional&&) noexcept = default;
  heap_optional& operator=(std::nullopt_t) noexcept {
    value_.reset();
    return *this;
  }
  template <typename U>
    requires(!std::is_same_v<std::remove_cvref_t<U>, heap_optional> &&
             !std::is_same_v<std::remove_cvref_t<U>, std::nullopt_t> && std::is_constructible_v<T, U &&>)
  heap_optional& operator=(U&& value) {
    if (value_) *value_ = std::forward<U>(value);
    else value_ = std::make_unique<T>(std::forward<U>(value));
    return *this;
  }

  template <typename... Args>
  T& emplace(Args&&... args) {
    value_ = std::make_unique<T>(std::forward<Args>(args)...);
    return *value_;
  }
  void reset() noexcept { value_.reset(); }

  bool has_value() const noexcept { return value_ != nullptr; }
  explicit operator bool() const noexcept { return has_value(); }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }
  T* operator->() { return value_.get(); }
  const T* operator->() const { return value_.get(); }

 private:
  std::unique_ptr<T> value_;
};

}  // namespace mailtap::protocol
