// Deterministic randomness for fault decisions: the session seed derived
// from the master seed and the session number (written into every capture, so the relay
// calls session_seed too), and a xoshiro256** generator with hand-written uniform and
// normal draws, so results never depend on the standard library's distributions.
// A generator belongs to one session (one thread at a time).
#pragma once
#include <array>
#include <cstdint>

namespace mailtap::policies {

// splitmix64(master + gamma * (number + 1)): the seed of session `number`.
std::uint64_t session_seed(std::uint64_t master, std::uint64_t number);

// The splitmix64 finaliser: a fixed bijective mix of 64 bits (derived ids, e.g. a blackhole's queue id).
std::uint64_t mix64(std::uint64_t z);

class rng {
 public:
  explicit rng(std::uint64_t seed);
  std::uint64_t next();
  // Uniform in [0, 1), 53 bits.
  double uniform01();
  // Uniform integer in [lo, hi] (hi >= lo; swapped otherwise).
  std::uint64_t uniform(std::uint64_t lo, std::uint64_t hi);
  // Standard normal (Box-Muller, cosine branch only: one draw pair per value).
  double normal();

 private:
  std::array<std::uint64_t, 4> s_{};
};

}  // namespace mailtap::policies
