// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title SettlementRegistry: haca's certified settlement round roots, anchored on an EVM chain.
/// @notice Registered posters (validators' anchoring keys) post each round's roots, keyed by the
/// haca block height that closed the round: the RFC 6962 root over leaves run_id || receipt_digest
/// and the OpenZeppelin StandardMerkleTree root over ["bytes32","bytes32"] leaves. Posting is
/// idempotent: the same roots again are a no-op, different roots for a posted height revert.
/// Anyone reads them.
contract SettlementRegistry {
    struct Anchor {
        uint64 round;
        uint64 postedAtBlock;
        address poster;
        bytes32 rfc6962Root;
        bytes32 ozRoot;
    }

    address public owner;
    mapping(address => bool) public isPoster;
    mapping(uint64 height => Anchor) private _anchors;
    /// The highest height posted so far.
    uint64 public latestHeight;

    event OwnerChanged(address indexed owner);
    event PosterSet(address indexed poster, bool allowed);
    event RootPosted(
        uint64 indexed height, uint64 indexed round, bytes32 rfc6962Root, bytes32 ozRoot, address indexed poster
    );

    error NotOwner(address caller);
    error NotPoster(address caller);
    error ZeroRoot(uint64 height);
    error RootConflict(uint64 height, bytes32 postedRfc6962Root, bytes32 postedOzRoot);
    error LengthMismatch();

    constructor() {
        owner = msg.sender;
        isPoster[msg.sender] = true;
        emit OwnerChanged(msg.sender);
        emit PosterSet(msg.sender, true);
    }

    function setOwner(address newOwner) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        owner = newOwner;
        emit OwnerChanged(newOwner);
    }

    function setPoster(address poster, bool allowed) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        isPoster[poster] = allowed;
        emit PosterSet(poster, allowed);
    }

    /// @notice Post one round's roots. Returns false when exactly these roots were already posted.
    function post(uint64 height, uint64 round, bytes32 rfc6962Root, bytes32 ozRoot) public returns (bool) {
        if (!isPoster[msg.sender]) revert NotPoster(msg.sender);
        if (rfc6962Root == bytes32(0)) revert ZeroRoot(height);
        Anchor storage a = _anchors[height];
        if (a.rfc6962Root != bytes32(0)) {
            if (a.rfc6962Root != rfc6962Root || a.ozRoot != ozRoot || a.round != round) {
                revert RootConflict(height, a.rfc6962Root, a.ozRoot);
            }
            return false;
        }
        _anchors[height] = Anchor(round, uint64(block.number), msg.sender, rfc6962Root, ozRoot);
        if (height > latestHeight) latestHeight = height;
        emit RootPosted(height, round, rfc6962Root, ozRoot, msg.sender);
        return true;
    }

    /// @notice Post several rounds in one transaction (each as `post`).
    function postBatch(
        uint64[] calldata heights,
        uint64[] calldata rounds,
        bytes32[] calldata rfc6962Roots,
        bytes32[] calldata ozRoots
    ) external {
        uint256 n = heights.length;
        if (rounds.length != n || rfc6962Roots.length != n || ozRoots.length != n) revert LengthMismatch();
        for (uint256 i = 0; i < n; i++) {
            post(heights[i], rounds[i], rfc6962Roots[i], ozRoots[i]);
        }
    }

    /// @notice The roots posted for `height` (all zero when none).
    function rootAt(uint64 height)
        external
        view
        returns (uint64 round, bytes32 rfc6962Root, bytes32 ozRoot, address poster, uint64 postedAtBlock)
    {
        Anchor storage a = _anchors[height];
        return (a.round, a.rfc6962Root, a.ozRoot, a.poster, a.postedAtBlock);
    }
}
